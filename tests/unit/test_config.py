"""memd.config: defaults, strict validation, overrides, rendering, reload classification."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from memd import config as cfg
from memd.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "memd.toml"
ENV = {"XDG_RUNTIME_DIR": "/run/user/1000", "XDG_DATA_HOME": "/home/u/.data", "HOME": "/home/u"}


@pytest.fixture(autouse=True)
def _controlled_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Path defaults come from the environment; pin it so results do not depend on the host."""
    for name in ("RUNTIME_DIRECTORY", "STATE_DIRECTORY", "MEMD_SOCKET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "memd.toml"
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str, overrides: dict[str, object] | None = None) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        cfg.load(path, overrides)
    return info.value


# --- defaults ---------------------------------------------------------------

def test_defaults() -> None:
    c = cfg.load(None)
    assert c.server.socket == "/run/user/1000/memd/memd.sock"
    assert c.storage.data_dir == "/home/u/.data/memd"
    assert c.server.socket_mode == 0o660 and c.server.allow_uids == ()
    assert c.server.max_bulk_bytes == 512 * 1024**2
    assert c.storage.fsync == cfg.DEFAULT_FSYNC == "everysec"
    assert c.storage.recovery == "tolerate-tail"
    assert c.flush == cfg.FlushConfig(100_000, 64 * 1024**2, 5.0)
    assert c.backpressure == cfg.BackpressureConfig(512 * 1024**2, 5.0)
    assert c.log.level == "info"


def test_shipped_file_matches_defaults() -> None:
    """The documented file must say exactly what the code does."""
    assert cfg.load(SHIPPED) == cfg.load(None)
    text = SHIPPED.read_text()
    for key in cfg.to_dict(cfg.load(None)):
        assert f"\n{key.split('.')[1]} = " in text, f"{key} is not documented in config/memd.toml"


def test_config_is_frozen() -> None:
    c = cfg.load(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.storage.fsync = "no"  # type: ignore[misc]


# --- errors name file and dotted key ----------------------------------------

@pytest.mark.parametrize(("text", "key", "says"), [
    ('[storage]\nfsync = "sometimes"\n', "storage.fsync",
     'must be one of always, everysec, no (got "sometimes")'),
    ('[storage]\nrecovery = "best-effort"\n', "storage.recovery", "tolerate-tail, absolute, skip-corrupt"),
    ('[log]\nlevel = "INFO"\n', "log.level", "one of debug, info, warning, error"),
    ("[server]\nmax_clients = true\n", "server.max_clients", "must be an integer >= 1 (got true)"),
    ("[server]\nmax_clients = 0\n", "server.max_clients", "integer >= 1 (got 0)"),
    ("[server]\nmax_args = 1.5\n", "server.max_args", "integer >= 1"),
    ('[server]\nmax_clients = "10"\n', "server.max_clients", 'integer >= 1 (got "10")'),
    ("[server]\nsocket = 5\n", "server.socket", "must be a string"),
    ('[server]\nsocket_mode = "0999"\n', "server.socket_mode", "octal mode string"),
    ('[server]\nsocket_mode = "1777"\n', "server.socket_mode", "0000..0777"),
    ("[server]\nsocket_mode = 0o660\n", "server.socket_mode", "octal mode string"),
    ("[server]\nallow_uids = [1000, -1]\n", "server.allow_uids", "non-negative integer ids"),
    ("[server]\nallow_gids = [true]\n", "server.allow_gids", "non-negative integer ids"),
    ('[server]\nallow_uids = "1000"\n', "server.allow_uids", "list of"),
    ("[server]\nmax_bulk_bytes = true\n", "server.max_bulk_bytes", "must be a size"),
    ('[server]\nmax_bulk_bytes = "0"\n', "server.max_bulk_bytes", "at least 1"),
    ('[storage]\nwal_segment_bytes = "32KiB"\n', "storage.wal_segment_bytes", "at least 64KiB"),
    ("[flush]\nmax_age_seconds = 0\n", "flush.max_age_seconds", "a number > 0"),
    ("[flush]\nmax_age_seconds = nan\n", "flush.max_age_seconds", "a number > 0"),
    ("[flush]\nmax_age_seconds = inf\n", "flush.max_age_seconds", "a number > 0"),
    ("[flush]\nmax_age_seconds = false\n", "flush.max_age_seconds", "a number > 0"),
    ("[backpressure]\nwrite_timeout_seconds = -1\n", "backpressure.write_timeout_seconds", "number >= 0"),
    ('[flush]\nmax_bytes = "1GiB"\n', "backpressure.buffer_max_bytes", "at least flush.max_bytes"),
    ("server = 1\n", "server", "must be a table [server]"),
])
def test_bad_values_name_file_and_key(tmp_path: Path, text: str, key: str, says: str) -> None:
    err = error(tmp_path, text)
    assert err.path == str(tmp_path / "memd.toml")
    assert err.key == key
    assert says in err.message
    assert str(err).startswith(f"{tmp_path / 'memd.toml'}: {key}: ")


def test_unknown_section(tmp_path: Path) -> None:
    err = error(tmp_path, "[storag]\nfsync = \"no\"\n")
    assert (err.key, err.path) == ("storag", str(tmp_path / "memd.toml"))
    assert "unknown section" in err.message and "did you mean storage?" in err.message


def test_unknown_key(tmp_path: Path) -> None:
    err = error(tmp_path, '[storage]\nfsnyc = "always"\n')
    assert err.key == "storage.fsnyc"
    assert "unknown key in [storage]; did you mean fsync?" in err.message


def test_syntax_error_has_line(tmp_path: Path) -> None:
    err = error(tmp_path, '[storage]\nfsync = "always"\nfsync = "no"\n')
    assert err.key == "<syntax>" and "line 3" in err.message


def test_not_utf8_is_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "memd.toml"
    path.write_bytes(b'[log]\nlevel = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        cfg.load(path)
    assert info.value.key == "<syntax>"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.load(tmp_path / "nope.toml")
    assert info.value.key == "<file>" and info.value.path == str(tmp_path / "nope.toml")


def test_socket_path_too_long(tmp_path: Path) -> None:
    err = error(tmp_path, f'[server]\nsocket = "/{"s" * 120}"\n')
    assert err.key == "server.socket" and "107 bytes" in err.message


# --- sizes --------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (0, 0), (4096, 4096), ("0", 0), ("512", 512), ("10B", 10), ("1KB", 1000), ("1kb", 1000),
    ("2MB", 2_000_000), ("1GB", 10**9), ("1TB", 10**12), ("1KiB", 1024), ("64MiB", 64 << 20),
    ("64 mib", 64 << 20), ("1.5GiB", 3 << 29), ("2TiB", 2 << 40), (" 3 KiB ", 3072),
    (".5KiB", 512), ("1.3KiB", 1331), ("1.KB", 1000),
])
def test_parse_size(value: object, expected: int) -> None:
    assert cfg.parse_size(value) == expected


@pytest.mark.parametrize("value", [
    -1, "-1KiB", "", "KiB", "1 K", "1k", "1m", "1 2MiB", "1e3", "1,5MiB", "64 MiBs", "0x10",
    True, False, 1.5, None, [1],
])
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.parse_size(value, path="f.toml", key="server.max_bulk_bytes")
    assert (info.value.path, info.value.key) == ("f.toml", "server.max_bulk_bytes")


def test_size_keys_accept_units_and_ints(tmp_path: Path) -> None:
    c = cfg.load(write(tmp_path, '[server]\nmax_bulk_bytes = "1.5 GiB"\nmax_inline_bytes = 100\n'
                                 '[storage]\nwal_compress_min_bytes = 0\n'))
    assert c.server.max_bulk_bytes == 3 << 29
    assert c.server.max_inline_bytes == 100
    assert c.storage.wal_compress_min_bytes == 0


# --- overrides ----------------------------------------------------------------

def test_overrides_beat_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[storage]\nfsync = "no"\ndata_dir = "/srv/memd"\n[log]\nlevel = "debug"\n')
    c = cfg.load(path, {"storage.fsync": "always", "server.socket": "/x/memd.sock"})
    assert c.storage.fsync == "always"
    assert c.server.socket == "/x/memd.sock"
    assert c.storage.data_dir == "/srv/memd"  # file value kept where no flag was given
    assert c.log.level == "debug"


def test_overrides_without_file() -> None:
    c = cfg.load(None, {"flush.max_records": "10", "flush.max_age_seconds": "0.5",
                        "server.allow_uids": "[1001, 1002]", "flush.max_bytes": "1MiB"})
    assert c.flush.max_records == 10 and c.flush.max_age_seconds == 0.5
    assert c.server.allow_uids == (1001, 1002) and c.flush.max_bytes == 1 << 20


@pytest.mark.parametrize(("overrides", "key", "says"), [
    ({"storage.fsync": "sometimes"}, "storage.fsync", "one of always, everysec, no"),
    ({"storage.fsnyc": "always"}, "storage.fsnyc", "did you mean"),
    ({"fsync": "always"}, "fsync", "unknown key"),
    ({"server.max_clients": "true"}, "server.max_clients", "got true"),
    ({"server.max_clients": "lots"}, "server.max_clients", 'got "lots"'),
    ({"backpressure.buffer_max_bytes": "1MiB"}, "backpressure.buffer_max_bytes", "flush.max_bytes"),
])
def test_override_errors_name_command_line(tmp_path: Path, overrides: dict[str, object],
                                           key: str, says: str) -> None:
    err = error(tmp_path, "", overrides)
    assert (err.path, err.key) == ("<command line>", key)
    assert says in err.message


def test_cross_field_check_accepts_equal(tmp_path: Path) -> None:
    c = cfg.load(write(tmp_path, '[flush]\nmax_bytes = "1GiB"\n[backpressure]\nbuffer_max_bytes = "1GiB"\n'))
    assert c.backpressure.buffer_max_bytes == c.flush.max_bytes


# --- paths --------------------------------------------------------------------

def test_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[storage]\ndata_dir = "data"\n[server]\nsocket = "~/memd.sock"\n')
    monkeypatch.chdir("/")
    c = cfg.load(path)
    assert c.storage.data_dir == str(tmp_path / "data")  # relative to the file, not the cwd
    assert c.server.socket == os.path.expanduser("~/memd.sock")
    monkeypatch.chdir(tmp_path)
    assert cfg.load(path, {"storage.data_dir": "other"}).storage.data_dir == str(tmp_path / "other")


@pytest.mark.parametrize(("env", "socket", "data"), [
    ({}, f"/tmp/memd-{os.getuid()}/memd.sock", "/home/u/.local/share/memd"),
    (ENV, "/run/user/1000/memd/memd.sock", "/home/u/.data/memd"),
    ({**ENV, "RUNTIME_DIRECTORY": "/run/memd", "STATE_DIRECTORY": "/var/lib/memd"},
     "/run/memd/memd.sock", "/var/lib/memd"),
    ({"RUNTIME_DIRECTORY": "/run/memd:/run/other", "STATE_DIRECTORY": "/var/lib/memd:/var/lib/x"},
     "/run/memd/memd.sock", "/var/lib/memd"),
    ({"XDG_RUNTIME_DIR": "relative", "XDG_DATA_HOME": "rel", "HOME": "/h"},
     f"/tmp/memd-{os.getuid()}/memd.sock", "/h/.local/share/memd"),
    ({"XDG_RUNTIME_DIR": "", "XDG_DATA_HOME": "", "HOME": "/h"},
     f"/tmp/memd-{os.getuid()}/memd.sock", "/h/.local/share/memd"),
])
def test_default_paths(env: dict[str, str], socket: str, data: str) -> None:
    env = {"HOME": "/home/u", **env}
    assert cfg.default_socket_path(env) == socket
    assert cfg.default_data_dir(env) == data
    assert cfg.load(None, env=env).server.socket == socket


def test_default_paths_read_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/memd")
    assert cfg.load(None).storage.data_dir == "/var/lib/memd"


def test_client_socket_path(tmp_path: Path) -> None:
    system = tmp_path / "memd.sock"
    env = {"XDG_RUNTIME_DIR": "/run/user/7", "RUNTIME_DIRECTORY": "/run/someunit"}
    assert cfg.client_socket_path(env, str(system)) == "/run/user/7/memd/memd.sock"
    system.touch()
    assert cfg.client_socket_path(env, str(system)) == str(system)
    assert cfg.client_socket_path({**env, "MEMD_SOCKET": "/s"}, str(system)) == "/s"


# --- rendering and reload -----------------------------------------------------

def test_to_toml_round_trip(tmp_path: Path) -> None:
    c = cfg.load(None, {"server.socket": '/tmp/we"ird\\ \u00e9 \U0001f600/s', "server.socket_mode": "600",
                        "server.socket_group": "memd", "server.allow_gids": [5, 6],
                        "server.max_bulk_bytes": 1000, "flush.max_age_seconds": 0.25,
                        "storage.wal_compress_min_bytes": "3KiB", "log.level": "debug"})
    text = cfg.to_toml(c)
    assert 'max_bulk_bytes = 1000\n' in text and 'wal_compress_min_bytes = "3KiB"' in text
    assert cfg.load(write(tmp_path, text)) == c
    assert cfg.load(write(tmp_path, cfg.to_toml(cfg.load(None)))) == cfg.load(None)


def test_to_dict() -> None:
    d = cfg.to_dict(cfg.load(None, {"server.allow_uids": [1, 2], "flush.max_age_seconds": 0.5}))
    assert d["storage.fsync"] == "everysec"
    assert d["server.socket_mode"] == "0660"
    assert d["server.max_bulk_bytes"] == str(512 << 20)
    assert d["server.allow_uids"] == "1 2" and d["server.allow_gids"] == ""
    assert d["flush.max_age_seconds"] == "0.5" and d["backpressure.write_timeout_seconds"] == "5"
    assert all(isinstance(v, str) for v in d.values())
    assert len(d) == 46
    assert d["server.pubsub_output_hard_bytes"] == str(32 << 20) and d["server.pubsub_output_soft_seconds"] == "60"
    assert d["memory.history_versions"] == "10" and d["memory.max_value_bytes"] == str(1 << 20)


def test_changes_classification() -> None:
    old = cfg.load(None)
    new = cfg.load(None, {"storage.fsync": "always", "flush.max_records": "5", "log.level": "debug",
                          "server.socket": "/tmp/x.sock", "storage.recovery": "absolute",
                          "server.allow_uids": [7]})
    live, restart = cfg.changes(old, new)
    assert live == {"storage.fsync": ("everysec", "always"), "flush.max_records": (100_000, 5),
                    "log.level": ("info", "debug"), "server.allow_uids": ((), (7,))}
    assert restart == {"server.socket": (old.server.socket, "/tmp/x.sock"),
                       "storage.recovery": ("tolerate-tail", "absolute")}
    assert cfg.changes(old, old) == ({}, {})


def test_reloadable_keys_exist() -> None:
    keys = set(cfg.to_dict(cfg.load(None)))
    assert cfg.RELOADABLE <= keys
    assert {"server.socket", "storage.data_dir", "storage.recovery", "server.socket_mode"}.isdisjoint(
        cfg.RELOADABLE)
    assert {k for k in keys if k.startswith(("flush.", "backpressure."))} <= cfg.RELOADABLE


def test_namespace_access_rules_parse_render_and_round_trip(tmp_path: Path) -> None:
    text = ('[memory]\naccess = [{prefix = "user-42", write_uids = [1042]},\n'
            '          {prefix = "team.shared", read_gids = [2000, 2001]}]\n')
    loaded = cfg.load(write(tmp_path, text))
    assert loaded.memory.access == (cfg.NamespaceRule("user-42", write_uids=(1042,)),
                                    cfg.NamespaceRule("team.shared", read_gids=(2000, 2001)))
    assert cfg.load(write(tmp_path, cfg.to_toml(loaded))) == loaded
    assert cfg.to_dict(loaded)["memory.access"] == (
        'prefix = "user-42", write_uids = [1042]; prefix = "team.shared", read_gids = [2000, 2001]')


@pytest.mark.parametrize(("text", "key"), [
    ('access = "user-42"', "memory.access"),
    ('access = [1]', "memory.access[0]"),
    ('access = [{prefix = ""}]', "memory.access[0].prefix"),
    ('access = [{prefix = "a..b"}]', "memory.access[0].prefix"),
    ('access = [{write_uids = [1]}]', "memory.access[0].prefix"),
    ('access = [{prefix = "a", read_uids = [-1]}]', "memory.access[0].read_uids"),
    ('access = [{prefix = "a", readers = [1]}]', "memory.access[0].readers"),
])
def test_bad_namespace_access_rules_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        cfg.load(write(tmp_path, f"[memory]\n{text}\n"))


@pytest.mark.parametrize(("text", "want"), [
    ('"every 30m"', "every 30m"), ('"every  90s"', "every 90s"), ('"0 3 * * *"', "0 3 * * *"), ('""', ""),
    ('"*/15 * * * mon-fri"', "*/15 * * * mon-fri"),
])
def test_schedules(tmp_path: Path, text: str, want: str) -> None:
    assert cfg.load(write(tmp_path, f"[compaction]\nschedule = {text}\n")).compaction.schedule == want


@pytest.mark.parametrize("text", ['"every 0s"', '"every 5 minutes"', '"hourly"', '"61 * * * *"', "3600"])
def test_bad_schedules_name_the_key(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("backup.schedule")):
        cfg.load(write(tmp_path, f"[backup]\nschedule = {text}\n"))


def test_schedule_seconds() -> None:
    assert cfg.schedule_seconds("every 2h") == 7200 and cfg.schedule_seconds("every 1.5m") == 90
    assert cfg.schedule_seconds("0 3 * * *") is None and cfg.schedule_seconds("") is None


def test_memory_limits_are_sizes_or_shares(tmp_path: Path) -> None:
    c = cfg.load(write(tmp_path, '[watchdog]\nsoft_limit = "512MiB"\nhard_limit = "1GiB"\n'))
    assert (c.watchdog.soft_limit, c.watchdog.hard_limit) == (512 << 20, 1 << 30)
    c = cfg.load(write(tmp_path, '[watchdog]\nsoft_limit = "25%"\nhard_limit = "40.5%"\n'))
    assert (c.watchdog.soft_limit, c.watchdog.hard_limit) == (0.25, 0.405)
    assert cfg.load(write(tmp_path, cfg.to_toml(c))) == c
    for bad in ('soft_limit = "0%"', 'soft_limit = "150%"', 'soft_limit = "lots"', 'soft_limit = 0',
                'soft_limit = "80%"'):  # the last: not below the default hard limit
        with pytest.raises(ConfigError, match="watchdog.soft_limit"):
            cfg.load(write(tmp_path, f"[watchdog]\n{bad}\n"))


def test_backup_dir_defaults_inside_the_data_dir(tmp_path: Path) -> None:
    c = cfg.load(write(tmp_path, f'[storage]\ndata_dir = "{tmp_path}/d"\n'))
    assert c.backup.dir == f"{tmp_path}/d/backups"
    assert cfg.load(write(tmp_path, '[backup]\ndir = "b"\n')).backup.dir == f"{tmp_path}/b"


def test_password_is_live_and_never_shown() -> None:
    """[server] password: reloadable, shown by CONFIG GET only as set or not, never in an error."""
    assert "server.password" in cfg.RELOADABLE
    assert cfg.to_dict(cfg.load(None))["server.password"] == ""
    assert cfg.to_dict(cfg.load(None, {"server.password": "s3cret-value"}))["server.password"] == "(set)"
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(None, {"server.password": "s3cret\nvalue"})
    assert "s3cret" not in str(info.value)

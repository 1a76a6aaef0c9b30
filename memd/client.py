"""Python clients for memd, on top of redis-py.

``SyncClient`` and ``Client`` (asyncio) are ``redis.Redis`` subclasses, so
every Redis command works as usual; they find the daemon's socket the way
the daemon picks it (``$MEMD_SOCKET``, ``/run/memd/memd.sock`` if it exists,
then the per-user default) and add typed helpers for memd's own commands.

The agent-memory commands (``MEM.*``, docs/memory.md) are typed methods:
``put``, ``get``, ``delete``, ``search``, ``list_namespaces`` and ``history``,
and for vector indexes ``index_create``, ``index_list`` and ``index_drop``
(memd stores and searches vectors the caller computed; it never embeds).
``get`` and ``delete`` share their names with Redis GET and DEL: a tuple
first argument (a namespace) selects the MEM command, anything else the Redis
one, so the clients stay drop-in ``redis.Redis`` objects (a tuple is never a
Redis key: redis-py refuses to encode it).

Each MEM call is first built as a :class:`MemCommand` (what to send, how to
read the reply) by a module-level function; the sync and async clients, and
pipelines such as :mod:`memd.integrations.langgraph`'s, all run those, so the
wire form and the reply parsing exist once.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar, overload

import redis
import redis.asyncio
from redis.typing import KeyT, ResponseT

from memd.config import client_socket_path

T = TypeVar("T")
Namespace = tuple[str, ...]

POOL_TIMEOUT = 20.0
"""Seconds a call waits for a free pooled connection before ``redis.ConnectionError``."""
MAX_CONNECTIONS = 100
"""Connections a client's pool opens at most (redis-py 6+'s default); more concurrent calls wait for one."""


def _blocking_pool(client: redis.Redis | redis.asyncio.Redis, pool_timeout: float | None,
                   pool_class: type[Any]) -> None:
    """Give ``client`` a pool where a call beyond ``max_connections`` waits instead of failing.

    redis-py's default pool raises ``MaxConnectionsError`` when all of its
    connections (100 by default) are in use, so a burst of concurrent calls
    (many graph nodes at once, ``asyncio.gather``) fails. The blocking pool
    is made from the default pool's own settings, so every redis-py keyword
    keeps its meaning. A pool passed by the caller is left alone, and so is a
    sync single-connection client (it took its connection already); otherwise
    the default pool has made no connection yet.
    """
    if not client.auto_close_connection_pool or getattr(client, "connection", None) is not None:
        return
    default = client.connection_pool
    # redis-py 5's default is 2**31 connections, which a blocking pool preallocates as a queue of
    # that many slots (a start that never ends); 6+ defaults to 100
    client.connection_pool = pool_class(connection_class=default.connection_class,
                                        max_connections=min(default.max_connections, MAX_CONNECTIONS),
                                        timeout=pool_timeout, **default.connection_kwargs)


def _stats(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        items = raw.items()
    else:  # RESP2: a flat list of field, value
        items = zip(raw[::2], raw[1::2], strict=True)
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in items}


# ---- MEM.*: values, wire form, replies ----------------------------------------------------

@dataclass(frozen=True, slots=True)
class Memory:
    """One live item as ``MEM.GET`` / ``MEM.SEARCH`` return it (``score`` only from a search)."""

    namespace: Namespace
    key: str
    value: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    score: float | None


@dataclass(frozen=True, slots=True)
class MemoryVersion:
    """An earlier version of an item, as ``MEM.HISTORY`` returns it."""

    version: int
    value: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    superseded_at: datetime
    deleted: bool


@dataclass(frozen=True, slots=True)
class MemCommand(Generic[T]):
    """One MEM call without I/O: the arguments to send and the parser of its reply.

    Clients run it with ``parse(execute_command(*args))``; a pipeline queues
    ``args`` and parses its own reply later, with the same code.
    """

    args: tuple[Any, ...]
    parse: Callable[[Any], T]


def wire_namespace(namespace: Namespace) -> str:
    """The dotted wire form of ``namespace`` (``()`` is ``""``, the root).

    Only what would make the dotted form ambiguous is refused here (an empty
    label or one holding a ``.``); the server checks everything else.
    """
    for label in namespace:
        if not label or "." in label:
            raise ValueError(f"invalid namespace {namespace!r}: labels must be non-empty and contain no '.'")
    return ".".join(namespace)


def _text(raw: bytes | str) -> str:
    """Replies are bytes unless the client was made with ``decode_responses=True``."""
    return raw.decode() if isinstance(raw, bytes) else raw


def _namespace(raw: bytes | str) -> Namespace:
    return tuple(_text(raw).split("."))


def _time(raw: str) -> datetime:
    """``2026-11-25T11:11:22.123Z`` -> an aware UTC datetime (3.11's fromisoformat reads the Z)."""
    return datetime.fromisoformat(raw)


def _memory(raw: bytes | str) -> Memory:
    d = json.loads(raw)
    expires_at = d["expires_at"]
    return Memory(namespace=_namespace(d["namespace"]), key=d["key"], value=d["value"], version=d["version"],
                  created_at=_time(d["created_at"]), updated_at=_time(d["updated_at"]),
                  expires_at=None if expires_at is None else _time(expires_at), score=d.get("score"))


def _maybe_memory(raw: bytes | str | None) -> Memory | None:
    """MEM.GET's reply: nil for an absent, deleted or expired item."""
    return None if raw is None else _memory(raw)


def _version(raw: bytes | str) -> MemoryVersion:
    d = json.loads(raw)
    return MemoryVersion(version=d["version"], value=d["value"], created_at=_time(d["created_at"]),
                         updated_at=_time(d["updated_at"]), superseded_at=_time(d["superseded_at"]),
                         deleted=d["deleted"])


@dataclass(frozen=True, slots=True)
class VectorIndexInfo:
    """One declared vector index, as ``MEM.INDEX LIST`` describes it.

    ``fields`` are the JSON paths clients embed (metadata for them: memd never
    reads it); ``nbytes`` is the index's memory (the wire's ``bytes``); ``ann``
    whether an approximate structure serves its searches.
    """

    prefix: Namespace
    dims: int
    distance: str
    fields: tuple[str, ...]
    vectors: int
    memories: int
    nbytes: int
    ann: bool


Vector = Sequence[float] | bytes
"""A vector: floats (a list, a numpy array...) or its wire form, ``dims * 4`` bytes of little-endian float32."""


def vector_blob(vector: Vector) -> bytes:
    """The wire form of ``vector``: little-endian float32, bytes passed through as they are.

    A numpy array converts without a Python loop; other sequences go through
    ``array('f')``. The length and the values (NaN, infinity, a zero vector
    under cosine) are the server's to check against the index.
    """
    if isinstance(vector, (bytes, bytearray, memoryview)):
        return bytes(vector)
    if getattr(vector, "ndim", 1) != 1:
        raise ValueError(f"a vector must be one-dimensional, not of shape {getattr(vector, 'shape', '?')}")
    astype = getattr(vector, "astype", None)
    if astype is not None:  # numpy (or alike)
        return bytes(astype("<f4").tobytes())
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def _index(raw: bytes | str) -> VectorIndexInfo:
    d = json.loads(raw)
    return VectorIndexInfo(prefix=_namespace(d["prefix"]) if d["prefix"] else (), dims=d["dims"],
                           distance=d["distance"], fields=tuple(d["fields"]), vectors=d["vectors"],
                           memories=d["memories"], nbytes=d["bytes"], ann=d["ann"])


def _json(value: Mapping[str, Any]) -> str:
    """Compact, as memd stores it anyway; NaN and non-objects are left for the server to refuse."""
    return json.dumps(value, separators=(",", ":"))


def put_command(namespace: Namespace, key: str, value: Mapping[str, Any], ttl: float | None = None, *,
                vectors: Mapping[str, Vector] | None = None) -> MemCommand[int]:
    """``MEM.PUT``: the reply is the new version.

    ``vectors`` maps a label (LangGraph's: the JSON path embedded, ``$`` for
    the whole value) to a vector; the new version carries exactly these (none:
    it is not in vector search results). An index must cover ``namespace``.
    """
    args: list[Any] = ["MEM.PUT", wire_namespace(namespace), key, _json(value)]
    if ttl is not None:
        args += ["TTL", ttl]
    for path, vector in (vectors or {}).items():
        args += ["VECTOR", path, vector_blob(vector)]
    return MemCommand(tuple(args), int)


def get_command(namespace: Namespace, key: str, *, refresh_ttl: bool = False) -> MemCommand[Memory | None]:
    """``MEM.GET``: the item, or None if absent, deleted or expired."""
    refresh = ("REFRESHTTL",) if refresh_ttl else ()
    return MemCommand(("MEM.GET", wire_namespace(namespace), key, *refresh), _maybe_memory)


def delete_command(namespace: Namespace, key: str) -> MemCommand[bool]:
    """``MEM.DEL``: True if a live item was deleted."""
    return MemCommand(("MEM.DEL", wire_namespace(namespace), key), bool)


def search_command(prefix: Namespace = (), *, query: str | None = None, filter: Mapping[str, Any] | None = None,
                   limit: int = 10, offset: int = 0, refresh_ttl: bool = False,
                   vector: Vector | None = None) -> MemCommand[list[Memory]]:
    """``MEM.SEARCH``: ``query`` is FTS5 syntax, sent as given; ``filter`` goes as JSON.

    ``vector`` alone: nearest neighbours (an index must cover ``prefix``);
    with ``query``: hybrid, BM25 and vector ranks fused (docs/memory.md).
    """
    args: list[Any] = ["MEM.SEARCH", wire_namespace(prefix)]
    if query is not None:
        args += ["QUERY", query]
    if vector is not None:
        args += ["VECTOR", vector_blob(vector)]
    if filter is not None:
        args += ["FILTER", _json(filter)]
    args += ["LIMIT", limit, "OFFSET", offset]
    if refresh_ttl:
        args.append("REFRESHTTL")
    return MemCommand(tuple(args), lambda raw: [_memory(m) for m in raw])


def namespaces_command(*, prefix: Namespace | None = None, suffix: Namespace | None = None,
                       max_depth: int | None = None, limit: int = 100,
                       offset: int = 0) -> MemCommand[list[Namespace]]:
    """``MEM.NAMESPACES``: an empty (or None) prefix or suffix constrains nothing, so it is not sent."""
    args: list[Any] = ["MEM.NAMESPACES"]
    if prefix:
        args += ["PREFIX", wire_namespace(prefix)]
    if suffix:
        args += ["SUFFIX", wire_namespace(suffix)]
    if max_depth is not None:
        args += ["MAXDEPTH", max_depth]
    args += ["LIMIT", limit, "OFFSET", offset]
    return MemCommand(tuple(args), lambda raw: [_namespace(ns) for ns in raw])


def history_command(namespace: Namespace, key: str, *,
                    limit: int | None = None) -> MemCommand[list[MemoryVersion]]:
    """``MEM.HISTORY``: earlier versions, newest first."""
    limit_args = () if limit is None else ("LIMIT", limit)
    return MemCommand(("MEM.HISTORY", wire_namespace(namespace), key, *limit_args),
                      lambda raw: [_version(v) for v in raw])


def index_create_command(prefix: Namespace = (), *, dims: int, distance: str = "cosine",
                         fields: Sequence[str] | None = None) -> MemCommand[None]:
    """``MEM.INDEX CREATE``: declare (or confirm) the vector index of ``prefix`` (``()``: every namespace)."""
    args: list[Any] = ["MEM.INDEX", "CREATE", wire_namespace(prefix), "DIMS", dims, "DISTANCE", distance]
    if fields is not None:
        if isinstance(fields, str):
            raise TypeError("fields is a list of JSON paths, e.g. ['$'] or ['text']; not one string")
        args += ["FIELDS", json.dumps(list(fields))]
    return MemCommand(tuple(args), lambda raw: None)


def index_list_command() -> MemCommand[list[VectorIndexInfo]]:
    """``MEM.INDEX LIST``: every declared index, sorted by prefix."""
    return MemCommand(("MEM.INDEX", "LIST"), lambda raw: [_index(i) for i in raw])


def index_drop_command(prefix: Namespace) -> MemCommand[bool]:
    """``MEM.INDEX DROP``: True if an index was dropped (its vectors go; the memories stay)."""
    return MemCommand(("MEM.INDEX", "DROP", wire_namespace(prefix)), bool)


def _is_namespace(first: Any) -> bool:
    """Whether ``get``/``delete`` were called the MEM way (see the module docstring)."""
    return isinstance(first, tuple)


def _redis_keys(first: KeyT, second: KeyT | None, rest: tuple[KeyT, ...]) -> tuple[KeyT, ...]:
    """``delete``'s Redis DEL keys, from the parameters its MEM signature gave them."""
    return (first, *(() if second is None else (second,)), *rest)


# ---- the clients ---------------------------------------------------------------------------

class SyncClient(redis.Redis):
    """A blocking client: ``SyncClient().set("k", "v")``, ``.memd_stats()``.

    Threads share its connection pool (``max_connections``, 100 by default);
    a call finding every connection busy waits up to ``pool_timeout`` seconds
    for one (``None``: for ever), then raises ``redis.ConnectionError``.
    """

    def __init__(self, socket_path: str | None = None, *, pool_timeout: float | None = POOL_TIMEOUT,
                 **kwargs: Any) -> None:
        super().__init__(unix_socket_path=socket_path or client_socket_path(), **kwargs)
        _blocking_pool(self, pool_timeout, redis.BlockingConnectionPool)

    def memd_stats(self) -> dict[str, Any]:
        """Every INFO figure in one map (buffer, WAL, LSNs, flush and fsync timings...)."""
        return _stats(self.execute_command("MEMD.STATS"))

    def memd_flush(self) -> None:
        """Flush the write buffer to SQLite now; returns when it is committed."""
        self.execute_command("MEMD.FLUSH")

    def wait_durable(self, timeout_ms: int = 0) -> bool:
        """WAITAOF 1 0: True once every earlier write of this connection is fsynced."""
        local, _ = self.execute_command("WAITAOF", 1, 0, timeout_ms)
        return bool(local)

    def _run(self, command: MemCommand[T]) -> T:
        return command.parse(self.execute_command(*command.args))

    def put(self, namespace: Namespace, key: str, value: Mapping[str, Any], ttl: float | None = None, *,
            vectors: Mapping[str, Vector] | None = None) -> int:
        """Store ``value`` (a JSON object) under ``namespace``/``key``; ``ttl`` in seconds. Returns the version.

        ``vectors``: label (the JSON path embedded) -> vector, for the index covering ``namespace``.
        """
        return self._run(put_command(namespace, key, value, ttl, vectors=vectors))

    @overload
    def get(self, namespace: Namespace, key: str, *, refresh_ttl: bool = False) -> Memory | None: ...
    @overload
    def get(self, namespace: KeyT) -> ResponseT: ...

    def get(self, namespace: Namespace | KeyT, key: str | None = None, *,  # type: ignore[override]
            refresh_ttl: bool = False) -> Memory | None | ResponseT:
        """MEM.GET for a tuple namespace (``refresh_ttl`` restarts its TTL), else Redis GET."""
        if not _is_namespace(namespace):
            return super().get(namespace)
        return self._run(get_command(namespace, key, refresh_ttl=refresh_ttl))

    @overload
    def delete(self, namespace: Namespace, key: str) -> bool: ...
    @overload
    def delete(self, namespace: KeyT, key: KeyT | None = None, *names: KeyT) -> ResponseT: ...

    def delete(self, namespace: Namespace | KeyT, key: KeyT | None = None,  # type: ignore[override]
               *names: KeyT) -> bool | ResponseT:
        """MEM.DEL for a tuple namespace (True if a live item went), else Redis DEL of every key given."""
        if not _is_namespace(namespace):
            return super().delete(*_redis_keys(namespace, key, names))
        return self._run(delete_command(namespace, key))

    def search(self, prefix: Namespace = (), *, query: str | None = None, filter: Mapping[str, Any] | None = None,
               limit: int = 10, offset: int = 0, refresh_ttl: bool = False,
               vector: Vector | None = None) -> list[Memory]:
        """Items under ``prefix``: BM25-ranked if ``query`` (FTS5 syntax), nearest first if ``vector``,
        fused ranks with both, else newest first."""
        return self._run(search_command(prefix, query=query, filter=filter, limit=limit, offset=offset,
                                        refresh_ttl=refresh_ttl, vector=vector))

    def list_namespaces(self, *, prefix: Namespace | None = None, suffix: Namespace | None = None,
                        max_depth: int | None = None, limit: int = 100, offset: int = 0) -> list[Namespace]:
        """Sorted distinct namespaces holding a live item (``*`` in prefix/suffix matches any label)."""
        return self._run(namespaces_command(prefix=prefix, suffix=suffix, max_depth=max_depth, limit=limit,
                                            offset=offset))

    def history(self, namespace: Namespace, key: str, *, limit: int | None = None) -> list[MemoryVersion]:
        """The retained earlier versions of ``namespace``/``key``, newest first."""
        return self._run(history_command(namespace, key, limit=limit))

    def index_create(self, prefix: Namespace = (), *, dims: int, distance: str = "cosine",
                     fields: Sequence[str] | None = None) -> None:
        """Declare the vector index of ``prefix``: ``dims`` floats a vector, ``distance`` cosine, ip or l2.

        Idempotent for the same spec; refused for another ``dims``/``distance``
        while the index holds vectors (drop it and re-embed).
        """
        self._run(index_create_command(prefix, dims=dims, distance=distance, fields=fields))

    def index_list(self) -> list[VectorIndexInfo]:
        """Every declared vector index, sorted by prefix."""
        return self._run(index_list_command())

    def index_drop(self, prefix: Namespace) -> bool:
        """Drop the index of ``prefix`` and its vectors (the memories stay); False if there was none."""
        return self._run(index_drop_command(prefix))


class Client(redis.asyncio.Redis):
    """The asyncio twin of :class:`SyncClient`: ``await Client().set("k", "v")``.

    Concurrent tasks share its pool the same way: beyond ``max_connections``
    in flight, a call waits up to ``pool_timeout`` seconds for a connection.
    """

    def __init__(self, socket_path: str | None = None, *, pool_timeout: float | None = POOL_TIMEOUT,
                 **kwargs: Any) -> None:
        super().__init__(unix_socket_path=socket_path or client_socket_path(), **kwargs)
        _blocking_pool(self, pool_timeout, redis.asyncio.BlockingConnectionPool)

    async def memd_stats(self) -> dict[str, Any]:
        return _stats(await self.execute_command("MEMD.STATS"))

    async def memd_flush(self) -> None:
        await self.execute_command("MEMD.FLUSH")

    async def wait_durable(self, timeout_ms: int = 0) -> bool:
        local, _ = await self.execute_command("WAITAOF", 1, 0, timeout_ms)
        return bool(local)

    async def _run(self, command: MemCommand[T]) -> T:
        return command.parse(await self.execute_command(*command.args))

    async def put(self, namespace: Namespace, key: str, value: Mapping[str, Any], ttl: float | None = None, *,
                  vectors: Mapping[str, Vector] | None = None) -> int:
        return await self._run(put_command(namespace, key, value, ttl, vectors=vectors))

    @overload
    async def get(self, namespace: Namespace, key: str, *, refresh_ttl: bool = False) -> Memory | None: ...
    @overload
    async def get(self, namespace: KeyT) -> Any: ...

    async def get(self, namespace: Namespace | KeyT, key: str | None = None, *,  # type: ignore[override]
                  refresh_ttl: bool = False) -> Memory | None | Any:
        if not _is_namespace(namespace):
            return await super().get(namespace)
        return await self._run(get_command(namespace, key, refresh_ttl=refresh_ttl))

    @overload
    async def delete(self, namespace: Namespace, key: str) -> bool: ...
    @overload
    async def delete(self, namespace: KeyT, key: KeyT | None = None, *names: KeyT) -> int: ...

    async def delete(self, namespace: Namespace | KeyT, key: KeyT | None = None,  # type: ignore[override]
                     *names: KeyT) -> bool | int:
        if not _is_namespace(namespace):
            return await super().delete(*_redis_keys(namespace, key, names))
        return await self._run(delete_command(namespace, key))

    async def search(self, prefix: Namespace = (), *, query: str | None = None,
                     filter: Mapping[str, Any] | None = None, limit: int = 10, offset: int = 0,
                     refresh_ttl: bool = False, vector: Vector | None = None) -> list[Memory]:
        return await self._run(search_command(prefix, query=query, filter=filter, limit=limit, offset=offset,
                                              refresh_ttl=refresh_ttl, vector=vector))

    async def list_namespaces(self, *, prefix: Namespace | None = None, suffix: Namespace | None = None,
                              max_depth: int | None = None, limit: int = 100, offset: int = 0) -> list[Namespace]:
        return await self._run(namespaces_command(prefix=prefix, suffix=suffix, max_depth=max_depth, limit=limit,
                                                  offset=offset))

    async def history(self, namespace: Namespace, key: str, *, limit: int | None = None) -> list[MemoryVersion]:
        return await self._run(history_command(namespace, key, limit=limit))

    async def index_create(self, prefix: Namespace = (), *, dims: int, distance: str = "cosine",
                           fields: Sequence[str] | None = None) -> None:
        await self._run(index_create_command(prefix, dims=dims, distance=distance, fields=fields))

    async def index_list(self) -> list[VectorIndexInfo]:
        return await self._run(index_list_command())

    async def index_drop(self, prefix: Namespace) -> bool:
        return await self._run(index_drop_command(prefix))

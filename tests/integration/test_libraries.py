"""Libraries built on plain Redis (no modules) run unchanged against a real memd daemon (issue #3).

- ``langgraph-checkpoint-plainredis``: LangGraph checkpointers on strings, hashes, sorted
  sets, MULTI/EXEC pipelines, SCAN and EXPIRE; sync ``RedisSaver`` and ``AsyncRedisSaver``
  each drive a real ``StateGraph`` that is interrupted, survives a daemon restart and resumes.
- ``langchain_community``'s ``RedisChatMessageHistory``: lists + EXPIRE, connected by a
  ``unix://`` URL; its ``get_client`` probes ``INFO cluster`` first, as it does against Redis.

The libraries are hard requirements (the ``test`` extra): a missing one fails, never skips.
"""

from __future__ import annotations

import operator
import signal
import warnings
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypedDict

import pytest
import redis
import redis.asyncio as aioredis
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import StateSnapshot
from langgraph_checkpoint_plainredis import AsyncRedisSaver, RedisSaver

from tests.integration.daemon import Daemon

with warnings.catch_warnings():  # the package warns on import that it is being sunset; nothing else
    warnings.filterwarnings("ignore", message=r"`langchain-community` is being sunset", category=DeprecationWarning)
    from langchain_community.chat_message_histories import RedisChatMessageHistory

pytestmark = pytest.mark.timeout(60)

TTL = 3600


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon(fsync="everysec").start()
    yield d
    d.cleanup()


def restart(d: Daemon) -> None:
    """Clean shutdown (SIGTERM) and a new process on the same data directory."""
    assert d.stop(signal.SIGTERM, timeout=20) == 0, d.log()
    d.start()


def plain(d: Daemon, protocol: int = 2) -> redis.Redis:
    return redis.Redis(unix_socket_path=d.socket, protocol=protocol, socket_timeout=10)


# ---- a small LangGraph graph ------------------------------------------------------------------

class State(TypedDict):
    count: int
    log: Annotated[list[str], operator.add]


def build_graph() -> StateGraph:
    def plan(s: State) -> dict[str, Any]:
        return {"count": s["count"] + 1, "log": [f"plan{s['count'] + 1}"]}

    def act(s: State) -> dict[str, Any]:
        return {"count": s["count"] * 10, "log": ["act"]}

    def review(s: State) -> dict[str, Any]:
        return {"count": s["count"] + 5, "log": ["review"]}

    g = StateGraph(State)
    g.add_node("plan", plan)
    g.add_node("act", act)
    g.add_node("review", review)
    g.add_edge(START, "plan")
    g.add_edge("plan", "act")
    g.add_edge("act", "review")
    g.add_edge("review", END)
    return g


def thread_keys(r: redis.Redis, thread_id: str) -> list[bytes]:
    return sorted(k for k in r.scan_iter(match="lg:*", count=50) if f":{thread_id}:".encode() in k)


# ---- sync RedisSaver ------------------------------------------------------------------------

def view(snap: StateSnapshot) -> tuple[Any, ...]:
    """What a checkpoint looks like, minus its random uuid6 ids (compared across savers)."""
    return snap.values, snap.next, snap.metadata["step"], snap.metadata["source"], snap.parent_config is None


def check_parents(history: list[StateSnapshot]) -> None:
    """Every checkpoint's parent is an earlier checkpoint of the thread (a fork is a branch)."""
    for i, snap in enumerate(history):
        assert snap.parent_config is None or snap.parent_config in [h.config for h in history[i + 1:]]


def sync_scenario(compile_graph: Callable[[], Any], restart_backend: Callable[[], None]) -> list[Any]:
    """Interrupt, restart, resume, a second turn, a replay fork, restart; returns the trace."""
    cfg = {"configurable": {"thread_id": "user:42"}}
    trace: list[Any] = []
    graph = compile_graph()
    trace.append(graph.invoke({"count": 1, "log": []}, cfg))
    snap = graph.get_state(cfg)
    history = list(graph.get_state_history(cfg))
    assert history[0].config == snap.config and snap.next == ("review",)
    trace += [view(snap), [view(h) for h in history]]

    restart_backend()
    graph = compile_graph()
    snap2 = graph.get_state(cfg)
    assert snap2.config == snap.config, "the latest checkpoint changed across the restart"
    assert [h.config for h in graph.get_state_history(cfg)] == [h.config for h in history]
    trace.append(view(snap2))
    trace.append(graph.invoke(None, cfg))  # resume from the persisted interrupt
    trace.append(graph.invoke({"count": 25}, cfg))  # second turn: stops before review again
    trace.append(graph.invoke(None, cfg))
    trace.append(graph.invoke(None, snap.config))  # time travel: replay the first interrupt, forks

    restart_backend()
    graph = compile_graph()
    history = list(graph.get_state_history(cfg))
    check_parents(history)
    trace += [view(graph.get_state(cfg)), [view(h) for h in history]]
    trace.append([view(h) for h in graph.get_state_history(cfg, before=history[2].config, limit=3)])
    trace.append([view(h) for h in graph.get_state_history(cfg, filter={"source": "input"})])
    return trace


@pytest.mark.parametrize("connect", ["url-resp2", "client-resp3"])
def test_sync_saver_graph_survives_restart_and_resumes(daemon: Daemon, connect: str) -> None:
    reference = InMemorySaver()
    expected = sync_scenario(
        lambda: build_graph().compile(checkpointer=reference, interrupt_before=["review"]), lambda: None)
    assert expected[1][1] == ("review",) and len(expected[-3]) >= 10  # the scenario is not vacuous

    savers: list[RedisSaver] = []

    def compile_graph() -> Any:
        if connect == "url-resp2":  # the saver builds its own client (RESP2, its default)
            savers.append(RedisSaver(url=f"unix://{daemon.socket}", ttl=TTL))
        else:
            savers.append(RedisSaver(plain(daemon, protocol=3), ttl=TTL))
        return build_graph().compile(checkpointer=savers[-1], interrupt_before=["review"])

    def restart_backend() -> None:
        r = plain(daemon)  # the saver's keys carry the TTL it asked for (EXPIRE inside MULTI/EXEC)
        assert 0 < r.ttl("lg:idx:user:42:") <= TTL
        assert r.type("lg:idx:user:42:") == b"zset" and r.type("lg:threads") == b"hash"
        r.close()
        savers[-1].close()
        restart(daemon)
        r = plain(daemon)
        assert 0 < r.ttl("lg:idx:user:42:") <= TTL, "EXPIRE did not survive the restart"
        r.close()

    try:
        assert sync_scenario(compile_graph, restart_backend) == expected
    finally:
        for s in savers:
            s.close()


def test_sync_saver_delete_thread_by_scan_with_glob_chars(daemon: Daemon) -> None:
    """delete_thread falls back to SCAN MATCH (with escaped glob chars) when the registry lacks the thread."""
    s = RedisSaver(url=f"unix://{daemon.socket}")
    graph = build_graph().compile(checkpointer=s)
    odd, other = "t*[x]", "tA[x]"
    for tid in (odd, other):
        assert graph.invoke({"count": 0, "log": []}, {"configurable": {"thread_id": tid}})["count"] == 15
    r = plain(daemon)
    assert thread_keys(r, odd) and thread_keys(r, other)
    r.close()
    restart(daemon)
    r = plain(daemon)
    assert r.hdel("lg:threads", f"lg:idx:{odd}:") == 1  # force the SCAN fallback
    s.delete_thread(odd)
    assert thread_keys(r, odd) == [], "SCAN MATCH with escaped glob chars missed keys"
    assert graph.get_state({"configurable": {"thread_id": odd}}).values == {}
    assert graph.get_state({"configurable": {"thread_id": other}}).values["count"] == 15
    s.delete_thread(other)  # registry path: exact keys, DEL + HDEL in MULTI/EXEC
    assert thread_keys(r, other) == [] and r.hlen("lg:threads") == 0
    r.close()
    restart(daemon)
    r = plain(daemon)
    assert [k for k in r.scan_iter(match="lg:*")] == [b"lg:seq"]
    r.close()
    s.close()


# ---- AsyncRedisSaver --------------------------------------------------------------------------

@pytest.mark.asyncio
@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
async def test_async_saver_graph_survives_restart_and_resumes(daemon: Daemon, protocol: int) -> None:
    cfg = {"configurable": {"thread_id": "async-1"}}

    def saver() -> AsyncRedisSaver:
        client = aioredis.Redis(unix_socket_path=daemon.socket, protocol=protocol, socket_timeout=10)
        return AsyncRedisSaver(client, ttl=TTL)

    s1 = saver()
    graph = build_graph().compile(checkpointer=s1, interrupt_before=["act"])
    assert await graph.ainvoke({"count": 4, "log": []}, cfg) == {"count": 5, "log": ["plan5"]}
    snap = await graph.aget_state(cfg)
    assert snap.next == ("act",)
    history = [h.config async for h in graph.aget_state_history(cfg)]
    assert len(history) == 3
    await s1.aclose()

    restart(daemon)

    s2 = saver()
    graph = build_graph().compile(checkpointer=s2, interrupt_before=["act"])
    snap2 = await graph.aget_state(cfg)
    assert snap2.config == snap.config and snap2.next == ("act",) and snap2.values["count"] == 5
    assert [h.config async for h in graph.aget_state_history(cfg)] == history
    assert await graph.ainvoke(None, cfg) == {"count": 55, "log": ["plan5", "act", "review"]}
    assert len([h async for h in graph.aget_state_history(cfg)]) == 5
    assert 0 < await s2.client.ttl("lg:idx:async-1:") <= TTL
    await s2.adelete_thread("async-1")
    assert (await graph.aget_state(cfg)).values == {}
    await s2.aclose()


# ---- LangChain RedisChatMessageHistory --------------------------------------------------------

def test_info_cluster_section_like_redis(daemon: Daemon) -> None:
    """langchain_community's get_client() reads INFO cluster ["cluster_enabled"] (KeyError if absent)."""
    r = plain(daemon)
    assert r.info("cluster") == {"cluster_enabled": 0}
    r.close()


def test_chat_message_history_roundtrip_ttl_and_restart(daemon: Daemon) -> None:
    url = f"unix://{daemon.socket}"
    h = RedisChatMessageHistory("sess-1", url=url, ttl=600)
    sent = [SystemMessage("be brief"), HumanMessage("héllo ✓ — 你好"), AIMessage("hi!")]
    h.add_messages(sent)
    h.add_user_message("second question")
    expected = [*sent, HumanMessage("second question")]
    assert [(type(m), m.content) for m in h.messages] == [(type(m), m.content) for m in expected]
    r = plain(daemon)
    assert r.type("message_store:sess-1") == b"list" and r.llen("message_store:sess-1") == 4
    assert 500 < r.ttl("message_store:sess-1") <= 600

    other = RedisChatMessageHistory("sess-2", url=url)  # no ttl: the key is persistent
    other.add_ai_message("kept")
    assert r.ttl("message_store:sess-2") == -1
    r.close()

    restart(daemon)

    h = RedisChatMessageHistory("sess-1", url=url, ttl=600)
    assert [(type(m), m.content) for m in h.messages] == [(type(m), m.content) for m in expected]
    r = plain(daemon)
    assert 500 < r.ttl("message_store:sess-1") <= 600, "TTL lost across restart"
    assert r.ttl("message_store:sess-2") == -1
    h.add_ai_message("answer")  # refreshes the TTL, appends at the end
    assert h.messages[-1].content == "answer" and len(h.messages) == 5
    h.clear()
    assert h.messages == [] and r.exists("message_store:sess-1") == 0
    r.close()

    restart(daemon)

    assert RedisChatMessageHistory("sess-1", url=url).messages == []
    assert [m.content for m in RedisChatMessageHistory("sess-2", url=url).messages] == ["kept"]

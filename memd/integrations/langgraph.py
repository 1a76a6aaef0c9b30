"""A LangGraph long-term memory store on memd's ``MEM.*`` commands.

Requires the ``langgraph`` extra (``pip install '.[langgraph]'`` from a memd checkout); nothing
else in memd imports this module, so LangGraph stays optional.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)

from memd.client import (
    Client,
    MemCommand,
    Memory,
    SyncClient,
    delete_command,
    get_command,
    namespaces_command,
    put_command,
    search_command,
)

__all__ = ["MemdStore", "fts_query"]


class MemdStore(BaseStore):
    """LangGraph's ``BaseStore`` persisted by a memd daemon.

    ``store = MemdStore()`` finds the daemon's socket the way the memd clients
    do; ``MemdStore(client=SyncClient(...), aclient=Client(...))`` reuses
    clients (the store closes only the clients it made: :meth:`close`,
    :meth:`aclose`). ``batch`` runs on the sync client, ``abatch`` on the
    async one; either sends a whole batch in one pipelined round trip.

    Semantics follow LangGraph's own stores: in a batch, every read sees the
    data as it was before the batch and puts to the same key collapse to the
    last one; a put with value ``None`` deletes.

    - **TTL** is in minutes, as everywhere in LangGraph (``ttl=`` on put,
      ``TTLConfig(default_ttl=..., refresh_on_read=...)`` here), sent to memd
      in seconds. ``refresh_ttl`` on get and search restarts the TTL of the
      items returned with the duration of their last put.
    - **query** is full-text (SQLite FTS5 with BM25 ranking, English
      stemming), not semantic: there is no embedding index and ``index=`` on
      put is ignored (every string value is indexed). LangGraph queries are
      natural language, so each whitespace-separated word is quoted as an
      FTS5 phrase and the words are joined with ``OR``: arbitrary user text
      never raises an FTS5 syntax error, and items matching more (and rarer)
      words rank first. ``score`` is the BM25 relevance (higher is better),
      ``None`` without a query. For FTS5 operators (``AND``, ``NEAR``,
      ``prefix*``), use :meth:`memd.client.SyncClient.search` directly.
    - **filter** is memd's ``FILTER`` (docs/memory.md): the operators of
      LangGraph's filters, compared the JSONB way (``true`` is not ``1``), and
      a nested object must equal the field as a whole, where ``InMemoryStore``
      matches it key by key.
    - **Ordering** without a query: newest update first.
    - **list_namespaces** lists only namespaces that hold a live item.
    - Limits are the daemon's: search ``limit`` at most 1000, namespace
      listing ``limit`` at most 10000.
    """

    supports_ttl = True

    def __init__(self, socket_path: str | None = None, *, ttl: TTLConfig | None = None,
                 client: SyncClient | None = None, aclient: Client | None = None) -> None:
        """``socket_path`` is for the clients the store makes, when ``client``/``aclient`` are not given."""
        self.ttl_config = ttl
        self._owns_client = client is None
        self._owns_aclient = aclient is None
        self._client = client if client is not None else SyncClient(socket_path)
        self._aclient = aclient if aclient is not None else Client(socket_path)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        plan = _Plan(ops)
        with self._client.pipeline(transaction=False) as pipe:
            for command in plan.commands:
                pipe.execute_command(*command.args)
            return plan.results(pipe.execute())

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        plan = _Plan(ops)
        async with self._aclient.pipeline(transaction=False) as pipe:
            for command in plan.commands:
                pipe.execute_command(*command.args)
            return plan.results(await pipe.execute())

    def close(self) -> None:
        """Close the sync client if the store made it."""
        if self._owns_client:
            self._client.close()

    async def aclose(self) -> None:
        """Close the async client if the store made it."""
        if self._owns_aclient:
            await self._aclient.aclose()


@dataclass(frozen=True, slots=True)
class _Step:
    """One queued command; for a read, the op it answers and how its parsed reply becomes the result."""

    command: MemCommand[Any]
    index: int | None = None
    convert: Callable[[Any], Result] | None = None


class _Plan:
    """A batch turned into MEM commands: every read first, then the deduplicated puts."""

    def __init__(self, ops: Iterable[Op]) -> None:
        self._ops = list(ops)
        self._steps: list[_Step] = []
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for i, op in enumerate(self._ops):
            validate_op_namespace(op)  # a '.' in a label would address another namespace
            if isinstance(op, PutOp):
                puts[(op.namespace, op.key)] = op
            elif (step := _read_step(i, op)) is not None:
                self._steps.append(step)
        self._steps += [_Step(_put_command(op)) for op in puts.values()]

    @property
    def commands(self) -> list[MemCommand[Any]]:
        return [step.command for step in self._steps]

    def results(self, replies: list[Any]) -> list[Result]:
        """One result per op: puts answer None, a listing that no namespace can match answers []."""
        results: list[Result] = [[] if isinstance(op, ListNamespacesOp) else None for op in self._ops]
        for step, reply in zip(self._steps, replies, strict=True):
            if step.convert is not None:
                results[step.index] = step.convert(step.command.parse(reply))
        return results


def _read_step(index: int, op: Op) -> _Step | None:
    """None for a listing whose conditions contradict each other: it needs no command."""
    if isinstance(op, GetOp):
        return _Step(get_command(op.namespace, op.key, refresh_ttl=op.refresh_ttl), index, _item)
    if isinstance(op, SearchOp):
        command = search_command(op.namespace_prefix, query=fts_query(op.query), filter=op.filter or None,
                                 limit=op.limit, offset=op.offset, refresh_ttl=op.refresh_ttl)
        return _Step(command, index, _search_items)
    if isinstance(op, ListNamespacesOp):
        command = _namespaces_command(op)
        return None if command is None else _Step(command, index, list)
    raise ValueError(f"unknown operation type: {type(op)}")


def _put_command(op: PutOp) -> MemCommand[Any]:
    if op.value is None:
        return delete_command(op.namespace, op.key)
    return put_command(op.namespace, op.key, dict(op.value), ttl=None if op.ttl is None else op.ttl * 60)


def _namespaces_command(op: ListNamespacesOp) -> MemCommand[Any] | None:
    """``MEM.NAMESPACES`` for ``op``, or None when its conditions contradict each other."""
    conditions = op.match_conditions or ()
    prefix = _merge([c.path for c in conditions if c.match_type == "prefix"])
    suffix = _merge([c.path[::-1] for c in conditions if c.match_type == "suffix"])
    if prefix is None or suffix is None:
        return None
    return namespaces_command(prefix=prefix, suffix=suffix[::-1], max_depth=op.max_depth, limit=op.limit,
                              offset=op.offset)


def _merge(paths: list[tuple[str, ...]]) -> tuple[str, ...] | None:
    """Prefix patterns that must all hold, as one (``*`` gives way to a label); None if two labels clash.

    memd takes one PREFIX and one SUFFIX, while a ``ListNamespacesOp`` may hold
    several conditions of a kind. Suffixes are merged reversed.
    """
    merged: list[str] = []
    for path in paths:
        for i, label in enumerate(path):
            if i == len(merged):
                merged.append(label)
            elif merged[i] == "*":
                merged[i] = label
            elif label not in ("*", merged[i]):
                return None
    return tuple(merged)


def fts_query(text: str | None) -> str | None:
    """A natural-language query as FTS5 text: each word a quoted phrase, OR-ed; None if there is no word.

    Quoting (with ``"`` doubled inside) makes every input valid FTS5: the
    tokenizer drops the punctuation inside a phrase instead of FTS5 parsing it.
    """
    words = text.split() if text else []
    return " OR ".join('"' + word.replace('"', '""') + '"' for word in words) or None


def _item(memory: Memory | None) -> Item | None:
    if memory is None:
        return None
    return Item(value=memory.value, key=memory.key, namespace=memory.namespace, created_at=memory.created_at,
                updated_at=memory.updated_at)


def _search_items(memories: list[Memory]) -> list[SearchItem]:
    return [SearchItem(namespace=m.namespace, key=m.key, value=m.value, created_at=m.created_at,
                       updated_at=m.updated_at, score=m.score) for m in memories]

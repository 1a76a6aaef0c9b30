"""A LangGraph long-term memory store on memd's ``MEM.*`` commands.

Requires the ``langgraph`` extra (``pip install '.[langgraph]'`` from a memd checkout); nothing
else in memd imports this module, so LangGraph stays optional.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from langchain_core.embeddings import Embeddings
from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from memd.client import (
    Client,
    MemCommand,
    Memory,
    SyncClient,
    delete_command,
    get_command,
    index_create_command,
    namespaces_command,
    put_command,
    search_command,
)

__all__ = ["MemdIndexError", "MemdStore", "fts_query"]

log = logging.getLogger(__name__)

# LangGraph's distance names (PostgresStore's ``distance_type``) -> memd's. The scores agree
# without conversion: PostgresStore returns 1 - cosine distance (cosine similarity), the dot
# product (-(<#>)), and minus the euclidean distance (-(<->)), as memd's MEM.SEARCH does.
DISTANCES = {"cosine": "cosine", "inner_product": "ip", "l2": "l2"}


class MemdIndexError(ValueError):
    """The daemon refused the vector index ``MemdStore(index=...)`` needs.

    Its index holds vectors of another dims or distance, or an index on a
    narrower prefix exists (indexes do not nest). The message says what to do.
    """


class _Index:
    """``MemdStore``'s ``index`` config, resolved the way LangGraph's own stores resolve it."""

    def __init__(self, config: IndexConfig) -> None:
        if "dims" not in config or not isinstance(config["dims"], int) or config["dims"] < 1:
            raise ValueError("index needs 'dims': the length of the embeddings (e.g. 1536)")
        distance = config.get("distance_type", "cosine")  # type: ignore[typeddict-item]
        if distance not in DISTANCES:
            raise ValueError(f"index distance_type {distance!r} is not one of {', '.join(DISTANCES)}")
        self.dims: int = config["dims"]
        self.distance = DISTANCES[distance]
        self.embeddings: Embeddings = ensure_embeddings(config.get("embed"))
        self.fields: list[str] = list(config.get("fields") or ["$"])
        self.paths = _tokenized(self.fields)

    def texts(self, op: PutOp) -> dict[str, str]:
        """Label -> text to embed for a put, as LangGraph's stores name them (``path``, or
        ``path.i`` when the path yields several texts); ``index=False``: none."""
        if op.value is None or op.index is False:
            return {}
        paths = self.paths if op.index is None else _tokenized(op.index)
        labels: dict[str, str] = {}
        for path, tokens in paths:
            texts = get_text_at_path(op.value, tokens)
            for i, text in enumerate(texts):
                labels[f"{path}.{i}" if len(texts) > 1 else path] = text
        return labels

    def vector(self, values: Sequence[float], what: str) -> list[float] | None:
        """A checked embedding; None for a zero vector under cosine (no direction: see MemdStore)."""
        vector = list(values)
        if len(vector) != self.dims:
            raise ValueError(f"the embedding of {what} has {len(vector)} dimensions; index dims is {self.dims}")
        if self.distance == "cosine" and not any(vector):
            log.warning("memd.langgraph zero_embedding of=%r skipped: cosine needs a direction", what)
            return None
        if not all(map(math.isfinite, vector)):
            raise ValueError(f"the embedding of {what} holds NaN or infinity")
        return vector


def _tokenized(fields: Sequence[str]) -> list[tuple[str, str | list[str]]]:
    """``(path, tokens)`` per field, ``$`` (the whole value) kept whole.

    LangGraph's stores do so for the store's ``fields`` only; a put's ``index``
    list goes through this too, so ``index=["$"]`` means the whole value there
    as well (see MemdStore's differences).
    """
    return [(p, p if p == "$" else tokenize_path(p)) for p in fields]


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

    - **Semantic search**: ``MemdStore(index={"dims": 1536, "embed": ...,
      "fields": ["text"], "distance_type": "cosine"})`` takes LangGraph's
      ``index`` config as InMemoryStore and PostgresStore do: ``embed`` is a
      function (sync or async), a LangChain ``Embeddings`` or a provider
      string; ``fields`` are JSON paths (default ``["$"]``, the whole value;
      ``items[*].text`` embeds each item); ``distance_type`` is ``cosine``,
      ``l2`` or ``inner_product``. On first use the store declares memd's
      index for every namespace (``MEM.INDEX CREATE ""``) and raises
      :class:`MemdIndexError` if the daemon holds vectors of another
      ``dims``/distance or an index under a narrower prefix. A put embeds the configured fields (``index=False``:
      none; ``index=[paths]``: those instead); ``search(query=...)`` is then a
      nearest-neighbour search with the query's embedding. A batch makes one
      ``embed_documents`` call for all its distinct texts and one
      ``embed_query`` per distinct query (``aembed_*`` in ``abatch``).
      ``score`` is on PostgresStore's scale: cosine similarity, dot product,
      or minus the euclidean distance (higher is better).
    - **TTL** is in minutes, as everywhere in LangGraph (``ttl=`` on put,
      ``TTLConfig(default_ttl=..., refresh_on_read=...)`` here), sent to memd
      in seconds. ``refresh_ttl`` on get and search restarts the TTL of the
      items returned with the duration of their last put.
    - **query** without an index is full-text (SQLite FTS5 with BM25 ranking,
      English stemming), not semantic, and ``index=`` on put is ignored
      (every string value is indexed). LangGraph queries are natural
      language, so each whitespace-separated word is quoted as an FTS5 phrase
      and the words are joined with ``OR``: arbitrary user text never raises
      an FTS5 syntax error, and items matching more (and rarer) words rank
      first. ``score`` is the BM25 relevance (higher is better), ``None``
      without a query. For FTS5 operators (``AND``, ``NEAR``, ``prefix*``) or
      hybrid search, use :meth:`memd.client.SyncClient.search` directly.
    - **filter** is memd's ``FILTER`` (docs/memory.md): the operators of
      LangGraph's filters, compared the JSONB way (``true`` is not ``1``), and
      a nested object must equal the field as a whole, where ``InMemoryStore``
      matches it key by key. NaN and infinities compare as in InMemoryStore.
    - **Ordering** without a query: newest update first.
    - **list_namespaces** lists only namespaces that hold a live item.
    - Limits are the daemon's: search ``limit`` at most 1000, namespace
      listing ``limit`` at most 10000.

    Where semantic search differs from LangGraph's stores, on purpose:

    - A put replaces all of the item's vectors. InMemoryStore and PostgresStore
      keep the vectors of paths the new put did not embed (also after a put
      with ``index=False``), so the old text keeps finding the new value;
      memd's version carries exactly the vectors written with it.
    - ``index=["$"]`` on a put embeds the whole value, as ``fields=["$"]``
      does; LangGraph's stores read a put's ``$`` as a field named "$" and
      embed nothing.
    - A semantic search returns only items that have a vector, as PostgresStore
      does; InMemoryStore pads a short page with unembedded items (score None).
    - A zero embedding under cosine is not stored (it has no direction; memd
      refuses it), where InMemoryStore scores it 0. Real models do not produce one.
    - Vectors are stored as float32: scores differ from InMemoryStore's float64
      arithmetic by about 1e-7, and items with equal scores come in memd's
      order (namespace, key), not insertion order.
    """

    supports_ttl = True

    def __init__(self, socket_path: str | None = None, *, ttl: TTLConfig | None = None,
                 index: IndexConfig | None = None, client: SyncClient | None = None,
                 aclient: Client | None = None) -> None:
        """``socket_path`` is for the clients the store makes, when ``client``/``aclient`` are not given."""
        self.ttl_config = ttl
        self.index_config = index
        self._index = _Index(index) if index else None
        self._index_ready = False
        self._owns_client = client is None
        self._owns_aclient = aclient is None
        self._client = client if client is not None else SyncClient(socket_path)
        self._aclient = aclient if aclient is not None else Client(socket_path)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        plan = _Plan(ops, self._index)
        if self._index is not None:
            if not self._index_ready:
                self._declared(lambda c: self._client.execute_command(*c.args))
            embeddings = self._index.embeddings
            documents = embeddings.embed_documents(plan.texts) if plan.texts else []
            queries = [embeddings.embed_query(q) for q in plan.queries]
            plan.embedded(documents, queries)
        with self._client.pipeline(transaction=False) as pipe:
            for command in plan.commands:
                pipe.execute_command(*command.args)
            return plan.results(pipe.execute())

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        plan = _Plan(ops, self._index)
        if self._index is not None:
            if not self._index_ready:
                create = self._index_command()
                try:
                    await self._aclient.execute_command(*create.args)
                except redis.ResponseError as exc:
                    raise self._refused(exc) from None
                self._index_ready = True
            embeddings = self._index.embeddings
            documents = await embeddings.aembed_documents(plan.texts) if plan.texts else []
            queries = await asyncio.gather(*(embeddings.aembed_query(q) for q in plan.queries))
            plan.embedded(documents, list(queries))
        async with self._aclient.pipeline(transaction=False) as pipe:
            for command in plan.commands:
                pipe.execute_command(*command.args)
            return plan.results(await pipe.execute())

    def _index_command(self) -> MemCommand[None]:
        assert self._index is not None
        return index_create_command((), dims=self._index.dims, distance=self._index.distance,
                                    fields=self._index.fields)

    def _declared(self, run: Callable[[MemCommand[None]], Any]) -> None:
        """Declare memd's index (idempotent on the daemon: concurrent first uses are harmless)."""
        try:
            run(self._index_command())
        except redis.ResponseError as exc:
            raise self._refused(exc) from None
        self._index_ready = True

    def _refused(self, exc: redis.ResponseError) -> MemdIndexError:
        assert self._index is not None
        return MemdIndexError(
            f"memd refused the vector index this store needs (every namespace, dims {self._index.dims}, "
            f"distance {self._index.distance}): {exc}. Configure the store like the daemon's index "
            "(memd.client.SyncClient().index_list() shows it), or drop that index "
            "(SyncClient().index_drop(prefix)) and put the memories again with the new embeddings.")

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
    """A batch turned into MEM commands: every read first, then the deduplicated puts.

    With an index, the texts to embed (``texts``: distinct, for one
    ``embed_documents`` call) and the queries (``queries``: distinct) are known
    first; :meth:`embedded` receives their embeddings, then ``commands`` can be built.
    """

    def __init__(self, ops: Iterable[Op], index: _Index | None = None) -> None:
        self._ops = list(ops)
        self._index = index
        self._reads: list[tuple[int, Op]] = []
        self._puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for i, op in enumerate(self._ops):
            validate_op_namespace(op)  # a '.' in a label would address another namespace
            if isinstance(op, PutOp):
                self._puts[(op.namespace, op.key)] = op
            elif isinstance(op, (GetOp, SearchOp, ListNamespacesOp)):
                self._reads.append((i, op))
            else:
                raise ValueError(f"unknown operation type: {type(op)}")
        self._labels = {k: index.texts(op) for k, op in self._puts.items()} if index else {}
        self.texts = list(dict.fromkeys(t for labels in self._labels.values() for t in labels.values()))
        self.queries = list(dict.fromkeys(
            op.query for _, op in self._reads if isinstance(op, SearchOp) and op.query)) if index else []
        self._documents: dict[str, list[float] | None] = {}
        self._query_vectors: dict[str, list[float] | None] = {}
        self._steps: list[_Step] | None = None if index else self._build()

    def embedded(self, documents: Sequence[Sequence[float]], queries: Sequence[Sequence[float]]) -> None:
        """The embeddings of ``texts`` and ``queries``, in their order."""
        assert self._index is not None
        if len(documents) != len(self.texts) or len(queries) != len(self.queries):
            raise ValueError(f"the embedding function returned {len(documents)} embeddings for "
                             f"{len(self.texts)} texts")
        self._documents = {t: self._index.vector(v, f"text {t[:40]!r}") for t, v in zip(self.texts, documents)}
        self._query_vectors = {q: self._index.vector(v, f"query {q[:40]!r}") for q, v in zip(self.queries, queries)}
        self._steps = self._build()

    def _build(self) -> list[_Step]:
        steps = [step for i, op in self._reads if (step := self._read_step(i, op)) is not None]
        return steps + [_Step(self._put_command(key, op)) for key, op in self._puts.items()]

    def _read_step(self, index: int, op: Op) -> _Step | None:
        if isinstance(op, SearchOp) and self._index is not None and op.query:
            vector = self._query_vectors[op.query]
            if vector is None:  # a zero query embedding under cosine: similar to nothing
                return None
            command = search_command(op.namespace_prefix, vector=vector, filter=op.filter or None,
                                     limit=op.limit, offset=op.offset, refresh_ttl=op.refresh_ttl)
            return _Step(command, index, _search_items)
        return _read_step(index, op)

    def _put_command(self, key: tuple[tuple[str, ...], str], op: PutOp) -> MemCommand[Any]:
        if op.value is None:
            return delete_command(op.namespace, op.key)
        vectors = {label: vector for label, text in self._labels.get(key, {}).items()
                   if (vector := self._documents[text]) is not None}
        return put_command(op.namespace, op.key, dict(op.value), ttl=None if op.ttl is None else op.ttl * 60,
                           vectors=vectors or None)

    @property
    def commands(self) -> list[MemCommand[Any]]:
        assert self._steps is not None, "embedded() first"
        return [step.command for step in self._steps]

    def results(self, replies: list[Any]) -> list[Result]:
        """One result per op: puts answer None; a listing no namespace can match, or a search by a
        query embedding that matches nothing, answers []."""
        assert self._steps is not None
        results: list[Result] = [[] if isinstance(op, (ListNamespacesOp, SearchOp)) else None for op in self._ops]
        for step, reply in zip(self._steps, replies, strict=True):
            if step.convert is not None:
                results[step.index] = step.convert(step.command.parse(reply))
        return results


def _read_step(index: int, op: Op) -> _Step | None:
    """A get, a full-text (or listing) search, a listing; None for a listing whose conditions
    contradict each other: it needs no command."""
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

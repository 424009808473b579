"""Ranking: who gets scored (subjects), how a batch of them is ranked, and the swappable top-K.

Plain Python + torch, no Beam. `pipelines/score.py` wires these into RunInference; `evaluation.py`
and the benchmark call `rank_batch` directly, so production, evaluation and the bare torch loop rank
exactly the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from shopllm.lexical import LexicalIndex, blend
from shopllm.sequences import history_prompt, search_prompt

NEG_INF = float("-inf")
BUCKET = 16  # prompts are left-padded to a multiple of this: a row's result never depends on its batch-mates
RANK_SLACK = 3  # <bos> <hist>|<query> ... <rec>: room the prompt layout needs besides its body

# reasons a subject is skipped (summary keys)
NO_HISTORY = "no_history"
UNKNOWN_ITEMS = "unknown_items"
EMPTY_QUERY = "empty_query"


def top_k(logprobs: torch.Tensor, k: int, exclude_mask=None):
    """The k best columns of each row, ties broken by column (lower column first).

    logprobs: (B, N) float scores (log-probabilities).
    k: how many to return; more than N is cut to N.
    exclude_mask: columns never returned: (B, N) bool (True = excluded), or the sparse pair
    (rows (E,), cols (E,)) long of the excluded cells (what `rank_batch` passes); None = nothing excluded.
    Returns (scores (B, k) float32, ids (B, k) int64). Where a row has fewer than k eligible
    columns, the missing places hold score -inf and id -1 (the caller drops them). A NaN score counts as -inf.
    `torch.topk` finds each row's k-th best score, so the work is linear in N (no full sort): the columns
    above it are kept, then the lowest columns tied with it, then only those k are sorted (stable).
    """
    B, N = logprobs.shape
    k = min(k, N)
    x = excluded(logprobs.float(), exclude_mask)
    x = x.masked_fill(x.isnan(), NEG_INF)
    if k == 0:
        return x[:, :0], torch.zeros((B, 0), dtype=torch.long, device=x.device)
    kth = torch.topk(x, k, dim=-1).values[:, -1:]  # (B, 1): each row's k-th best score
    keep = x > kth  # (B, N): fewer than k per row
    ties = x == kth
    room = k - keep.sum(1, keepdim=True)  # (B, 1): places left for the ties
    over = (ties.sum(1, keepdim=True) > room).squeeze(1)  # (B,): rows with more ties than places
    if bool(over.any()):
        sub = ties[over]
        ties[over] = sub & (sub.cumsum(1) <= room[over])  # the lowest tied columns
    cols = (keep | ties).nonzero()[:, 1].view(B, k)  # (B, k) in column order
    scores, order = torch.sort(x.gather(1, cols), dim=-1, descending=True, stable=True)
    ids = cols.gather(1, order).masked_fill(scores == NEG_INF, -1)
    return scores, ids


def excluded(x: torch.Tensor, exclude_mask) -> torch.Tensor:
    """x (B, N) with the excluded cells (see top_k) at -inf, as a new tensor; x itself is left as it is."""
    if exclude_mask is None:
        return x
    if isinstance(exclude_mask, torch.Tensor):
        return x.masked_fill(exclude_mask, NEG_INF)
    rows, cols = exclude_mask
    return x.index_put((rows, cols), torch.tensor(NEG_INF, device=x.device))


# ---- subjects ---------------------------------------------------------------------------------
class RankRequest(NamedTuple):
    """One subject to rank. kind 'history': `items` in time order; kind 'search': `query` text."""

    kind: str
    items: tuple[str, ...] = ()
    query: str = ""
    exclude: tuple[str, ...] = ()  # item ids never recommended to this subject


class RankResult(NamedTuple):
    item_ids: tuple[str, ...]  # best first; fewer than K when fewer items were eligible
    scores: tuple[float, ...]
    skipped: str | None = None  # why nothing was ranked (NO_HISTORY, UNKNOWN_ITEMS, EMPTY_QUERY)
    n_unknown: int = 0  # history items the model does not know (dropped from the prompt)


def collapse_repeats(items: Iterable[str]) -> list[str]:
    """[a, a, b, a] -> [a, b, a]: consecutive repeats say nothing new about the next item."""
    out: list[str] = []
    for i in items:
        if i is not None and (not out or out[-1] != i):
            out.append(i)
    return out


def day_bounds(date: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a UTC day."""
    start = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


EVENT_COLUMNS = ["user_id", "event_type", "item_id", "query", "ts", "arrival"]  # what scoring reads of events
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(t: dt.datetime) -> int:
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


class UserEvents(NamedTuple):
    """Some of one user's events as columns (numpy arrays of one length): what `user_request` needs."""

    ts: np.ndarray  # int64 microseconds since the epoch (UTC)
    arrival: np.ndarray  # int64: the tie-breaker after ts
    event_type: np.ndarray  # object (str)
    item_id: np.ndarray  # object (str or None)


def user_fragments(events: pa.Table, end: dt.datetime) -> Iterator[tuple[str, UserEvents]]:
    """A table of curated events -> (user_id, that user's events before `end`) for each user in it.

    Arrow filters and sorts the table; one pass cuts it at user boundaries, so no Python object is made per
    event but its two strings. A user's events spread over several files come out as several fragments:
    group them by user and pass them all to `user_request`.
    """
    t = events.filter(pc.less(events["ts"], pa.scalar(end, events.schema.field("ts").type)))
    if not t.num_rows:
        return
    t = t.sort_by([("user_id", "ascending")])
    users = t["user_id"].to_numpy(zero_copy_only=False)
    cols = UserEvents(
        t["ts"].cast(pa.int64()).to_numpy(),
        pc.fill_null(t["arrival"], 0).to_numpy(),
        t["event_type"].to_numpy(zero_copy_only=False),
        t["item_id"].to_numpy(zero_copy_only=False),
    )
    starts = np.flatnonzero(np.concatenate(([True], users[1:] != users[:-1])))
    for a, b in zip(starts, [*starts[1:], len(users)]):
        yield users[a], UserEvents(*(c[a:b] for c in cols))


def user_request(fragments: Iterable[UserEvents], active_since: dt.datetime) -> RankRequest | None:
    """A user's request from their events up to the end of the day; None if not active since `active_since`.

    History = item events (everything but search) in time order (ts, then arrival), consecutive repeats
    collapsed. Excluded = items the user purchased.
    """
    parts = list(fragments)
    ev = UserEvents(*(np.concatenate(c) for c in zip(*parts))) if parts else None
    if ev is None or not len(ev.ts) or ev.ts.max() < _micros(active_since):
        return None
    order = np.lexsort((ev.arrival, ev.ts))
    types, items = ev.event_type[order], ev.item_id[order]
    history = collapse_repeats(items[types != "search"])
    bought = sorted({i for i in items[types == "purchase"] if i})
    return RankRequest("history", items=tuple(history), exclude=tuple(bought))


def query_counts(events: pa.Table, since: dt.datetime, end: dt.datetime) -> Iterator[tuple[str, int]]:
    """A table of curated events -> (query, how many times it was searched in [since, end)), per query."""
    ts_type = events.schema.field("ts").type
    query = events["query"]
    searched = pc.and_(
        pc.and_(pc.equal(events["event_type"], "search"), pc.greater(pc.utf8_length(query), 0)),
        pc.and_(
            pc.greater_equal(events["ts"], pa.scalar(since, ts_type)), pc.less(events["ts"], pa.scalar(end, ts_type))
        ),
    )
    counts = pc.value_counts(query.filter(pc.fill_null(searched, False)))
    yield from zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())


def session_request(session: dict) -> RankRequest:
    """A session's request: its items in order (repeats collapsed); every item it saw is excluded."""
    seen = [i for i in session["item_ids"] or [] if i is not None]
    return RankRequest("history", items=tuple(collapse_repeats(seen)), exclude=tuple(sorted(set(seen))))


def session_on_day(session: dict, start: dt.datetime, end: dt.datetime) -> bool:
    """Sessions are cut by inactivity, so a session overlapping the day has events on it."""
    return session["start_ts"] < end and session["end_ts"] >= start


def query_request(query: str) -> RankRequest:
    return RankRequest("search", query=query)


# ---- the batch ranker ---------------------------------------------------------------------------
@dataclass
class Ranker:
    """Everything ranking needs, loaded once per worker: the model and the catalog as columns.

    Columns are today's catalog items known to the model, sorted by item_id, so restricting to the
    catalog and breaking ties by item id are one gather plus the column-order tie-break in `top_k`.
    """

    model: torch.nn.Module
    tokenizer: object  # shopllm.tokenizer.TextTokenizer
    items: object  # shopllm.vocab.ItemVocab
    catalog: Sequence[str]
    device: str = "cpu"
    item_texts: Mapping[str, str] | None = None  # item_id -> its text (shopllm.lexical.item_text), for the blend
    lexical_weight: float = 0.0  # searches: the model's scores plus this times BM25 (shopllm.lexical)
    ann: object | None = None  # shopllm.ann.AnnSettings: above its catalog size, rank through an approximate index
    col_items: list[str] = field(init=False)
    col_tokens: torch.Tensor = field(init=False)  # (C,) item index of each column
    col_index: dict[str, int] = field(init=False)  # item_id -> its column
    index: object | None = field(init=False, default=None)  # shopllm.ann.ItemIndex over the columns, when `ann` asks

    def __post_init__(self):
        self.n_text = self.model.config.n_text
        self.block_size = self.model.config.block_size
        self.col_items = sorted({i for i in self.catalog if i in self.items})
        idx = [self.items.index[i] for i in self.col_items]
        self.col_tokens = torch.tensor(idx, dtype=torch.long, device=self.device)
        self.col_index = {item: c for c, item in enumerate(self.col_items)}
        texts = self.item_texts
        self.lexical = LexicalIndex([texts.get(i, "") for i in self.col_items]) if texts is not None else None
        if self.ann is not None and self.ann.wanted(len(self.col_items)):
            from shopllm.ann import build_index  # faiss only where an index is asked for

            self.index = build_index(self.model, self.col_tokens, self.ann)

    def query_scores(self, logp: torch.Tensor, queries: Sequence[str]) -> torch.Tensor:
        """The query scope's scores of search prompts: the model's log-probabilities (B, C) blended with BM25
        of the query texts when the ranker has the catalog's texts and a weight."""
        if self.lexical is None or not self.lexical_weight:
            return logp
        return blend(logp, self.lexical.scores(queries), self.lexical_weight)

    def prompt(self, req: RankRequest) -> tuple[list[int] | None, str | None, int]:
        """(token ids, skip reason, unknown count) of one request."""
        if req.kind == "search":
            text_ids = self.tokenizer.encode(req.query or "")
            if not text_ids:
                return None, EMPTY_QUERY, 0
            return search_prompt(text_ids[: self.block_size - RANK_SLACK]), None, 0
        if not req.items:
            return None, NO_HISTORY, 0
        known = [i for i in req.items if i in self.items]
        n_unknown = len(req.items) - len(known)
        known = collapse_repeats(known)  # dropping an unknown item can make neighbours repeat
        if not known:
            return None, UNKNOWN_ITEMS, n_unknown
        tail = known[-(self.block_size - RANK_SLACK) :]
        return history_prompt(self.items.token_ids(tail, self.n_text)), None, n_unknown

    def exclude_columns(self, req: RankRequest) -> list[int]:
        return [self.col_index[i] for i in req.exclude if i in self.col_index]


def pad_left(seqs: Sequence[Sequence[int]], length: int, pad_id: int = 0):
    """(ids (B, length) long, mask (B, length) bool) with every sequence right-aligned."""
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.bool)
    for r, s in enumerate(seqs):
        if s:
            ids[r, length - len(s) :] = torch.as_tensor(s, dtype=torch.long)
            mask[r, length - len(s) :] = True
    return ids, mask


def bucket_length(n: int, limit: int) -> int:
    return min(limit, -(-n // BUCKET) * BUCKET)


def length_buckets(lengths: Sequence[int], limit: int) -> dict[int, list[int]]:
    """Row indices grouped by padded length, in a fixed order."""
    groups: dict[int, list[int]] = {}
    for r, n in enumerate(lengths):
        groups.setdefault(bucket_length(n, limit), []).append(r)
    return dict(sorted(groups.items()))


def next_item_logprobs(model, prompts: Sequence[Sequence[int]], device, columns=None) -> torch.Tensor:
    """Next-item log-probabilities of each prompt, (B, n_items), or (B, len(columns)) over the item
    `columns` (item token offsets) given: left-padded, one forward per length bucket. The one ranking path:
    scoring, evaluation and the trainer's validation all rank through it."""
    width = model.config.n_items if columns is None else len(columns)
    out = torch.empty((len(prompts), width), dtype=torch.float32, device=device)
    for length, rows in length_buckets([len(p) for p in prompts], model.config.block_size).items():
        ids, mask = pad_left([prompts[r] for r in rows], length)
        logp = model.next_item_logprobs(ids.to(device), mask.to(device))  # (b, n_items)
        out[torch.tensor(rows, device=device)] = logp if columns is None else logp.index_select(1, columns)
    return out


def next_item_hidden(model, prompts: Sequence[Sequence[int]], device) -> torch.Tensor:
    """The final hidden state (B, n_embd) float32 at each prompt's last position, bucketed and left-padded like
    `next_item_logprobs`: what an item index (shopllm.ann) searches instead of scoring the whole catalog."""
    out = torch.empty((len(prompts), model.config.n_embd), dtype=torch.float32, device=device)
    with torch.no_grad():
        for length, rows in length_buckets([len(p) for p in prompts], model.config.block_size).items():
            ids, mask = pad_left([prompts[r] for r in rows], length)
            h = model.hidden(ids.to(device), mask.to(device))[:, -1, :]  # (b, n_embd)
            out[torch.tensor(rows, device=device)] = h.float()
    return out


def catalog_logprobs(ranker: Ranker, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
    """Next-item log-probabilities over the catalog columns, (B, C)."""
    return next_item_logprobs(ranker.model, prompts, ranker.device, ranker.col_tokens)


def exclude_index(ranker: Ranker, requests: Sequence[RankRequest]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (E,), cols (E,)) long: the catalog cells each request must never get, E of them in all."""
    rows: list[int] = []
    cols: list[int] = []
    for row, req in enumerate(requests):
        c = ranker.exclude_columns(req)
        rows += [row] * len(c)
        cols += c
    device = ranker.device
    return torch.tensor(rows, dtype=torch.long, device=device), torch.tensor(cols, dtype=torch.long, device=device)


def exclude_mask(ranker: Ranker, requests: Sequence[RankRequest]) -> torch.Tensor:
    """(B, C) bool, True at the catalog columns each request must never get (`exclude_index`, dense)."""
    mask = torch.zeros((len(requests), len(ranker.col_items)), dtype=torch.bool, device=ranker.device)
    return mask.index_put_(exclude_index(ranker, requests), torch.tensor(True, device=ranker.device))


def rank_batch(ranker: Ranker, requests: Sequence[RankRequest], k: int, rank_fn=top_k) -> list[RankResult]:
    """Rank a batch of subjects: prompts -> catalog log-probabilities -> `rank_fn` (swappable top-K, given
    the excluded cells as the sparse pair of `exclude_index`). A ranker with an item index (`Ranker.ann`,
    shopllm.ann) searches it instead, and `rank_fn` is not used (see `shopllm.ann.ItemIndex.rank`)."""
    results: list[RankResult | None] = [None] * len(requests)
    live: list[tuple[int, list[int], int]] = []  # (request index, prompt, unknown items)
    for r, req in enumerate(requests):
        ids, skipped, n_unknown = ranker.prompt(req)
        if ids is None:
            results[r] = RankResult((), (), skipped, n_unknown)
        else:
            live.append((r, ids, n_unknown))
    if live and ranker.index is not None:  # approximate: search the item index (shopllm.ann)
        scores, cols = ranker.index.rank(ranker, [ids for _, ids, _ in live], [requests[r] for r, _, _ in live], k)
    elif live:
        logp = catalog_logprobs(ranker, [ids for _, ids, _ in live])  # (b, C)
        searches = [row for row, (r, _, _) in enumerate(live) if requests[r].kind == "search"]
        if searches and ranker.lexical is not None:
            rows = torch.tensor(searches, device=logp.device)
            logp[rows] = ranker.query_scores(logp[rows], [requests[live[row][0]].query for row in searches])
        scores, cols = rank_fn(logp, k, exclude_index(ranker, [requests[r] for r, _, _ in live]))
    if live:
        scores, cols = scores.cpu().tolist(), cols.cpu().tolist()
        for row, (r, _, n_unknown) in enumerate(live):
            pairs = [(ranker.col_items[c], s) for c, s in zip(cols[row], scores[row]) if c >= 0]
            results[r] = RankResult(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), None, n_unknown)
    return results  # type: ignore[return-value]

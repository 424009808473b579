"""top_k, the subjects (user / session / query requests) and batch ranking with a two-layer model."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter, defaultdict

import pyarrow as pa
import pytest
import torch

from shopllm.model import GPT, GPTConfig
from shopllm.ranking import (
    EVENT_COLUMNS,
    NO_HISTORY,
    UNKNOWN_ITEMS,
    Ranker,
    RankRequest,
    collapse_repeats,
    day_bounds,
    query_counts,
    rank_batch,
    session_on_day,
    session_request,
    top_k,
    user_fragments,
    user_request,
)
from shopllm.schemas import EVENTS
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import ItemVocab

T0 = dt.datetime(2024, 5, 10, tzinfo=dt.UTC)


def test_top_k_breaks_ties_by_column_and_respects_the_mask():
    logp = torch.tensor([[-1.0, -0.5, -1.0, -0.5, -3.0], [-2.0, -2.0, -2.0, -2.0, -2.0]])
    exclude = torch.tensor([[False, False, False, True, False], [True, False, False, False, False]])
    scores, ids = top_k(logp, 3, exclude)
    assert ids.tolist() == [[1, 0, 2], [1, 2, 3]]
    assert scores.dtype == torch.float32 and scores.shape == (2, 3)
    assert scores[0].tolist() == [-0.5, -1.0, -1.0]


def test_top_k_with_fewer_eligible_items_marks_the_gaps():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    scores, ids = top_k(logp, 5, torch.tensor([[True, False, True]]))
    assert ids.tolist() == [[1, -1, -1]]  # k cut to N = 3; two places have nothing eligible
    assert scores[0, 1:].tolist() == [float("-inf")] * 2


def _e(ts_h, etype, item=None, arrival=0, user="u", query=None):
    ts = T0 + dt.timedelta(hours=ts_h)
    return {"user_id": user, "event_type": etype, "item_id": item, "query": query, "ts": ts, "arrival": arrival}


def _table(events: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(events, schema=pa.schema([f for f in EVENTS if f.name in EVENT_COLUMNS]))


def _requests(files: list[list[dict]], end: dt.datetime, active_since: dt.datetime) -> dict:
    """What the score pipeline does: fragments per file, grouped by user, one request per user."""
    by_user = defaultdict(list)
    for events in files:
        for user, fragment in user_fragments(_table(events), end):
            by_user[user].append(fragment)
    return {u: r for u, parts in by_user.items() if (r := user_request(parts, active_since)) is not None}


def test_user_request_orders_collapses_and_masks_purchases():
    events = [
        _e(3, "view", "b"),
        _e(1, "view", "a"),
        _e(2, "view", "a"),
        _e(2, "view", "c", arrival=1),
        _e(4, "search", query="x"),
        _e(5, "purchase", "b"),
        _e(30, "view", "z"),  # after the end of the day
    ]
    end = T0 + dt.timedelta(hours=24)
    # a(1) a(2) c(2, later arrival) b(3) b(5): consecutive repeats collapse; the same from one file or three
    want = {"u": RankRequest("history", items=("a", "c", "b"), exclude=("b",))}
    assert _requests([events], end, active_since=T0) == want
    assert _requests([events[:2], events[2:4], events[4:]], end, active_since=T0) == want
    assert _requests([events], end, active_since=T0 + dt.timedelta(hours=6)) == {}  # not active
    assert collapse_repeats(["x", "x", None, "y", "x"]) == ["x", "y", "x"]


def test_event_requests_on_arrow_equal_the_row_by_row_definition():
    """Random events over several users and files: each user's request is the one built event by event."""
    rng = random.Random(7)
    events = [
        _e(
            rng.uniform(0, 30),
            rng.choice(["view", "view", "cart", "purchase", "search"]),
            rng.choice(["a", "b", "c", None]),
            arrival=i,
            user=f"u{rng.randrange(20)}",
            query=rng.choice(["", "red shoes", "红色", None]),
        )  # fmt: skip
        for i in range(400)
    ]
    end, since = T0 + dt.timedelta(hours=24), T0 + dt.timedelta(hours=6)
    files = [events[i : i + 70] for i in range(0, len(events), 70)]
    want = {}
    for user in {e["user_id"] for e in events}:
        mine = sorted(
            (e for e in events if e["user_id"] == user and e["ts"] < end), key=lambda e: (e["ts"], e["arrival"])
        )
        if mine and mine[-1]["ts"] >= since:
            items = collapse_repeats(e["item_id"] for e in mine if e["event_type"] != "search")
            bought = sorted({e["item_id"] for e in mine if e["event_type"] == "purchase" and e["item_id"]})
            want[user] = RankRequest("history", items=tuple(items), exclude=tuple(bought))
    assert _requests(files, end, since) == want and len(want) > 5

    counts = Counter()
    for events_of_file in files:
        counts.update(dict(query_counts(_table(events_of_file), since, end)))
    searched = [e["query"] for e in events if e["event_type"] == "search" and e["query"] and since <= e["ts"] < end]
    assert counts == Counter(searched) and len(counts) == 2


def test_sessions_of_the_day():
    start, end = day_bounds("2024-05-10")
    s = {
        "start_ts": start - dt.timedelta(minutes=10),
        "end_ts": start + dt.timedelta(minutes=5),
        "item_ids": ["a", None, "b", "a"],
    }
    assert session_on_day(s, start, end)
    assert not session_on_day({**s, "end_ts": start - dt.timedelta(minutes=1)}, start, end)
    assert session_request(s) == RankRequest("history", items=("a", "b", "a"), exclude=("a", "b"))


@pytest.fixture(scope="module")
def ranker():
    tok = TextTokenizer.train(["red shoes", "blue shirt", "红色 鞋子"] * 3, vocab_size=280, min_frequency=1)
    items = ItemVocab([f"i{i}" for i in range(10)])
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(n_text=tok.n_text, n_items=len(items), block_size=40, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    ).eval()
    catalog = [f"i{i}" for i in range(8)] + ["not-in-model"]  # i8, i9 left the catalog
    return Ranker(model, tok, items, catalog)


def test_rank_batch_respects_catalog_mask_and_k(ranker):
    reqs = [
        RankRequest("history", items=("i1", "i2"), exclude=("i3", "i9")),
        RankRequest("search", query="red shoes"),
        RankRequest("history", items=()),
        RankRequest("history", items=("zzz",)),
    ]
    res = rank_batch(ranker, reqs, k=5)
    assert len(res[0].item_ids) == 5 and len(set(res[0].item_ids)) == 5
    assert not {"i3", "i8", "i9"} & set(res[0].item_ids)
    assert set(res[1].item_ids) <= {f"i{i}" for i in range(8)}
    assert (res[2].skipped, res[3].skipped, res[3].n_unknown) == (NO_HISTORY, UNKNOWN_ITEMS, 1)
    few = rank_batch(ranker, [RankRequest("history", items=("i1",), exclude=tuple(f"i{i}" for i in range(6)))], k=5)
    assert few[0].item_ids and len(few[0].item_ids) == 2  # only i6, i7 eligible


def test_rank_batch_result_does_not_depend_on_batch_mates(ranker):
    long_req = RankRequest("history", items=tuple(f"i{i % 8}" for i in range(30)))
    short_req = RankRequest("history", items=("i4", "i5"))
    alone = rank_batch(ranker, [short_req], k=8)[0]
    together = rank_batch(ranker, [long_req, short_req, RankRequest("search", query="blue shirt")], k=8)[1]
    assert alone.item_ids == together.item_ids
    assert torch.allclose(torch.tensor(alone.scores), torch.tensor(together.scores), atol=1e-5)
    # and equal to the unpadded model call: scores are log-probabilities over all item tokens
    n_text = ranker.model.config.n_text
    ids = torch.tensor([[1, 3, n_text + 4, n_text + 5]])
    full = ranker.model.next_item_logprobs(ids)[0]
    assert torch.allclose(torch.tensor(alone.scores), full[[int(i[1:]) for i in alone.item_ids]], atol=1e-5)


def test_long_history_keeps_the_most_recent_items(ranker):
    req = RankRequest("history", items=tuple(f"i{i % 8}" for i in range(100)))
    ids, skipped, _ = ranker.prompt(req)
    assert skipped is None and len(ids) == 2 + ranker.block_size - 3  # <bos> <hist> + the last block_size-3 items
    assert ids[-1] == ranker.items.token_id("i3", ranker.n_text)  # item 99 % 8


def sort_top_k(logprobs, k, exclude_mask=None):
    """The former top_k: a full stable descending sort (equal scores in column order)."""
    x = logprobs.float() if exclude_mask is None else logprobs.float().masked_fill(exclude_mask, float("-inf"))
    scores, ids = torch.sort(x, dim=-1, descending=True, stable=True)
    scores, ids = scores[:, :k], ids[:, :k]
    return scores, ids.masked_fill(scores == float("-inf"), -1)


@pytest.mark.parametrize("seed", range(6))
def test_top_k_equals_the_full_stable_sort_ties_included(seed):
    g = torch.Generator().manual_seed(seed)
    B, N = 9, 50
    logp = -torch.randint(0, 6, (B, N), generator=g).float()  # few distinct values: ties everywhere
    if seed % 2:
        logp = torch.randn(B, N, generator=g).where(logp > -3, logp)  # some rows' ties only below
    logp[0] = -2.0  # one row all tied
    logp[1, :45] = float("-inf")  # a row with fewer than k finite scores
    mask = torch.rand(B, N, generator=g) < 0.3
    mask[2] = True  # a row with nothing eligible
    rows, cols = mask.nonzero(as_tuple=True)
    for k in (1, 5, 12, N, N + 3):
        want = sort_top_k(logp, min(k, N), mask)
        for exclude in (mask, (rows, cols)):
            got = top_k(logp, k, exclude)
            assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0]), (k, type(exclude))
    assert torch.equal(top_k(logp, 7)[1], sort_top_k(logp, 7)[1])
    assert top_k(logp, 0)[1].shape == (B, 0) and top_k(logp[:0], 4)[1].shape == (0, 4)


def test_top_k_leaves_the_scores_as_they_are():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    top_k(logp, 2, (torch.tensor([0]), torch.tensor([0])))
    assert logp.tolist() == [[-1.0, -2.0, -3.0]]

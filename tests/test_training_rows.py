"""Building the three kinds of example and their splits (plain functions, no Beam)."""

import os
import random
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopllm import hashing, training_rows
from shopllm.config import PrepareConfig
from shopllm.schemas import ITEMS
from shopllm.sequences import attribute_text, search_sequence
from shopllm.vocab import BOS_ID, DESC_ID, EOS_ID, HIST_ID, QUERY_ID, REC_ID
from tests import reference_rows
from tests.reference_rows import Event, Example, SearchPair

N_TEXT = 100
INDEX = {f"i{k}": k for k in range(10)}  # item_id -> vocab index; token = N_TEXT + index
CFG = PrepareConfig(
    history_window=50, min_history=3, history_eos=True, catalog_search_rows=False
)  # the layout the tests spell out


def tok(*items):
    return [N_TEXT + INDEX[i] for i in items]


def ev(ts, etype, item=None, query=None, session="s1", arrival=0):
    return Event(ts, arrival, session, etype, item, query)


def test_holdout_split_is_stable_across_processes_and_near_the_share():
    keys = [f"query {k}" for k in range(4000)]
    here = [hashing.holdout_split(k, 0.2) for k in keys[:50]]
    code = (
        "from shopllm.hashing import holdout_split; "
        "print(','.join(holdout_split(f'query {k}', 0.2) for k in range(50)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip().split(",") == here
    splits = [hashing.holdout_split(k, 0.2) for k in keys]
    assert 0.08 < splits.count("valid") / len(keys) < 0.12
    assert 0.08 < splits.count("test") / len(keys) < 0.12
    assert all(hashing.holdout_split(k, 0.0) == "train" for k in keys[:100])


def test_history_leave_one_out_in_time_order_with_repeats_collapsed():
    events = [  # given out of order; ts ties broken by arrival
        ev(30, "click", "i3", arrival=2),
        ev(10, "view", "i1"),
        ev(20, "view", "i2", arrival=5),
        ev(20, "click", "i2", arrival=6),  # repeat of i2: collapsed
        ev(30, "view", "i9", arrival=1),  # same ts as the i3 click but arrived first
        ev(40, "purchase", "unknown-item"),
        ev(50, "add_to_cart", "i4"),
    ]
    res = reference_rows.build_user_examples("u1", events, INDEX, N_TEXT, CFG)
    # order: i1, i2, i9, i3, i4 -> test i4, valid i3, train i1 i2 i9
    assert res.history == [
        Example(
            "valid",
            "history",
            "u1",
            [BOS_ID, HIST_ID, *tok("i1", "i2", "i9")],
            "i3",
            tok("i3")[0],
            tok("i1", "i2", "i9"),
        ),
        Example(
            "test",
            "history",
            "u1",
            [BOS_ID, HIST_ID, *tok("i1", "i2", "i9", "i3")],
            "i4",
            tok("i4")[0],
            tok("i1", "i2", "i9", "i3"),
        ),
        Example("train", "history", "u1", [BOS_ID, HIST_ID, *tok("i1", "i2", "i9"), EOS_ID], None, -1, []),
    ]
    assert res.unknown_item_events == 1
    assert not res.short


def test_long_history_is_cut_into_windows_and_prompts_keep_the_last_window():
    items = [f"i{k % 10}" for k in range(9)]  # i0..i8, no repeats
    events = [ev(t, "view", item) for t, item in enumerate(items)]
    res = reference_rows.build_user_examples("u", events, INDEX, N_TEXT, replace(CFG, history_window=3))
    train = [ex.input_ids for ex in res.history if ex.split == "train"]
    # 7 train items cut from the end into windows of 3: [i0] [i1 i2 i3] [i4 i5 i6]
    assert train == [[BOS_ID, HIST_ID, *tok(*w), EOS_ID] for w in (["i0"], ["i1", "i2", "i3"], ["i4", "i5", "i6"])]
    valid = next(ex for ex in res.history if ex.split == "valid")
    assert valid.input_ids == [BOS_ID, HIST_ID, *tok("i4", "i5", "i6")]
    assert valid.history_ids == tok(*items[:7])  # the whole history is masked, not just the window


def test_short_user_goes_to_train_only_and_is_counted():
    res = reference_rows.build_user_examples("u", [ev(1, "view", "i1"), ev(2, "click", "i2")], INDEX, N_TEXT, CFG)
    assert res.short
    assert [ex.split for ex in res.history] == ["train"]
    assert res.history[0].input_ids == [BOS_ID, HIST_ID, *tok("i1", "i2"), EOS_ID]


def test_search_target_is_the_next_click_cart_or_purchase_in_the_same_session():
    events = [
        ev(1, "search", query="earbuds", session="a"),
        ev(2, "view", "i1", session="a"),  # a view does not answer a query
        ev(3, "click", "i5", session="b"),  # another session
        ev(4, "click", "i2", session="a"),  # <- target of "earbuds"
        ev(5, "search", query="kettle", session="a"),
        ev(6, "search", query="kettle steel", session="a"),  # "kettle" had no answer before this
        ev(7, "add_to_cart", "i3", session="a"),
        ev(8, "view", "i6", session="b"),
        ev(9, "view", "i7", session="b"),
    ]
    res = reference_rows.build_user_examples("u", events, INDEX, N_TEXT, replace(CFG, search_holdout=0.0))
    assert res.searches == [
        SearchPair("train", "earbuds", "i2", tok("i2")[0]),
        SearchPair("train", "kettle steel", "i3", tok("i3")[0]),
    ]
    assert res.searches_without_target == 1


def test_search_pair_whose_target_is_a_held_out_history_event_is_not_trained_on():
    events = [
        ev(1, "view", "i1"),
        ev(2, "view", "i2"),
        ev(3, "search", query="mug"),
        ev(4, "click", "i3"),
        ev(5, "view", "i4"),
    ]  # valid target i3 (the click after the search), test target i4
    res = reference_rows.build_user_examples("u", events, INDEX, N_TEXT, replace(CFG, search_holdout=0.0))
    assert res.searches == []
    assert res.searches_withheld == 1


def test_search_example_layouts():
    pair = SearchPair("train", "mug", "i3", 103)
    assert reference_rows.search_example(pair, [50, 51]) == Example(
        "train", "search", "mug", [BOS_ID, QUERY_ID, 50, 51, REC_ID, 103, EOS_ID], None, -1, []
    )
    held = reference_rows.search_example(pair._replace(split="test"), [50, 51])
    assert held == Example("test", "search", "mug", [BOS_ID, QUERY_ID, 50, 51, REC_ID], "i3", 103, [])


def test_describe_split_by_item_hash_and_cut_to_max_tokens():
    cfg = replace(CFG, describe_holdout=0.5, max_describe_tokens=10)
    rows = [
        reference_rows.describe_example(f"item-{k}", 200 + k, [20, 21], list(range(30, 50)), cfg) for k in range(200)
    ]
    assert all(len(r.input_ids) == 10 for r in rows)
    held = [r for r in rows if r.split != "train"]
    assert 60 < len(held) < 140
    assert all(r.target_item == r.subject_id and r.target_id == -1 for r in held)
    assert [r.split for r in rows] == [
        reference_rows.describe_example(r.subject_id, 0, [], [], cfg).split for r in rows
    ]


def test_chunk_from_end():
    assert reference_rows.chunk_from_end([1, 2, 3, 4, 5], 2) == [[1], [2, 3], [4, 5]]
    assert reference_rows.chunk_from_end([1, 2], 5) == [[1, 2]]
    assert reference_rows.chunk_from_end([], 3) == []


# ---- the vectorised shard code against a plain per-user reference --------------------------------


def reference_user_examples(user_id, events, index, n_text, cfg):
    """The per-user rules written out one event at a time (the pipeline computes them with Arrow/numpy)."""
    events = sorted(
        events,
        key=lambda e: (
            e.ts,
            e.arrival,
            e.event_type,
            e.session_id,
            e.item_id is None,
            e.item_id or "",
            e.query is None,
            e.query or "",
        ),
    )  # nulls last
    out = reference_rows.UserExamples()
    runs = []  # [item_id, [event positions]], consecutive repeats merged
    for pos, e in enumerate(events):
        if e.event_type not in training_rows.ITEM_EVENT_TYPES:
            continue
        if e.item_id not in index:
            out.unknown_item_events += 1
        elif runs and runs[-1][0] == e.item_id:
            runs[-1][1].append(pos)
        else:
            runs.append([e.item_id, [pos]])
    tokens = [n_text + index[item] for item, _ in runs]
    held_out = set()
    out.short = len(runs) < max(cfg.min_history, 2)
    if not out.short:
        for split, k in (("valid", len(runs) - 2), ("test", len(runs) - 1)):
            before = tokens[:k]
            out.history.append(
                Example(
                    split,
                    "history",
                    user_id,
                    [BOS_ID, HIST_ID, *before[-cfg.history_window :]],
                    runs[k][0],
                    tokens[k],
                    list(dict.fromkeys(before)),
                )
            )
            held_out.update(runs[k][1])
    train = tokens if out.short else tokens[:-2]
    end = [EOS_ID] if cfg.history_eos else []
    for chunk in reference_rows.chunk_from_end(train, cfg.history_window):
        out.history.append(Example("train", "history", user_id, [BOS_ID, HIST_ID, *chunk, *end], None, -1, []))
    ts = [events[positions[0]].ts for _, positions in runs[: len(train)]]
    if any(a == b for a, b in zip(ts, ts[1:])):  # tie-shuffled copies of a history with a same-timestamp tie
        seed = np.uint64(hashing.stable_hash64(user_id))
        seen = {tuple(ex.input_ids) for ex in out.history if ex.split == "train"}
        for copy in range(1, cfg.tie_shuffles + 1):
            noise = hashing.mix64(
                seed
                ^ hashing.mix64(
                    np.arange(len(train), dtype=np.uint64) * np.uint64(training_rows.MAX_TIE_SHUFFLES + 1)
                    + np.uint64(copy)
                )
            )
            order = sorted(range(len(train)), key=lambda i: (ts[i], int(noise[i])))
            shuffled = [train[i] for k, i in enumerate(order) if k == 0 or train[i] != train[order[k - 1]]]
            for chunk in reference_rows.chunk_from_end(shuffled, cfg.history_window):
                ids = (BOS_ID, HIST_ID, *chunk, *end)
                if ids not in seen:  # a copy row equal to an earlier row is not written again
                    seen.add(ids)
                    out.history.append(Example("train", "history", user_id, list(ids), None, -1, []))
    for pos, e in enumerate(events):
        if e.event_type != "search" or not e.query:
            continue
        later = [
            p
            for p in range(pos + 1, len(events))
            if events[p].session_id == e.session_id
            and events[p].event_type in training_rows.SEARCH_TARGET_TYPES | {"search"}
        ]
        if not later or events[later[0]].event_type == "search":
            out.searches_without_target += 1
            continue
        target = later[0]
        if events[target].item_id not in index:
            continue
        split = hashing.holdout_split(e.query, cfg.search_holdout)
        if split == "train" and target in held_out:
            out.searches_withheld += 1
            continue
        out.searches.append(SearchPair(split, e.query, events[target].item_id, n_text + index[events[target].item_id]))
    return out


def test_tie_shuffled_copies_collapse_repeats_and_skip_rows_already_written():
    """i1 i2 i1 in one second: an order that puts i1 next to itself is one i1, as repeats are anywhere;
    the held-out i3 and i4 never move; a copy equal to the original or an earlier copy is not written."""
    events = [
        ev(1, "view", "i1", arrival=1),
        ev(1, "view", "i2", arrival=2),
        ev(1, "view", "i1", arrival=3),
        ev(2, "view", "i5", arrival=4),
        ev(3, "view", "i6", arrival=5),
        ev(9, "view", "i3", arrival=6),
        ev(9, "view", "i4", arrival=7),
    ]
    cfg = replace(CFG, tie_shuffles=12, history_window=2)
    rows = [
        ex.input_ids[2:-1]
        for ex in reference_rows.build_user_examples("u", events, INDEX, N_TEXT, cfg).history
        if ex.split == "train"
    ]
    assert len(rows) == len({tuple(r) for r in rows})  # no row twice
    assert tok("i5", "i6") in rows and rows.count(tok("i5", "i6")) == 1  # the tie-free chunk is not copied
    for row in rows:
        assert all(a != b for a, b in zip(row, row[1:])) and not set(row) & set(tok("i3", "i4"))
    # the original chunks (window 2, from the end): i1 | i2 i1 | i5 i6; the orders i1 i1 i2 -> i1 i2 and
    # i2 i1 i1 -> i2 i1 add one new row between them
    assert sorted(rows) == sorted([tok("i1"), tok("i2", "i1"), tok("i5", "i6"), tok("i1", "i2")])


def random_users(seed, n_users=25):
    """Events of many users: ts ties broken by arrival or content, repeats, unknown items, interleaved sessions."""
    rng = random.Random(seed)
    items = [*INDEX, "unknown"]
    users = {}
    for u in range(n_users):
        evs = []
        for _ in range(rng.randint(0, 14)):
            etype = rng.choice(["view", "view", "click", "add_to_cart", "purchase", "search", "other"])
            item = None if etype == "search" else rng.choice(items[:3] if rng.random() < 0.3 else items)
            query = rng.choice(["mug", "kettle", "耳机", ""]) if etype == "search" else None
            evs.append(Event(rng.randint(0, 6), rng.randint(0, 2), rng.choice(["a", "b"]), etype, item, query))
        users[f"user-{u}"] = evs
    return users


def as_sortable(ex):
    return (ex.split, ex.subject_id, tuple(ex.input_ids), ex.target_item or "", ex.target_id, tuple(ex.history_ids))


def users_table(users: dict) -> pa.Table:
    return pa.table(
        {
            "user_id": [u for u, evs in users.items() for _ in evs],
            **{
                name: pa.array([getattr(e, name) for evs in users.values() for e in evs], type_)
                for name, type_ in reference_rows.EVENT_FIELD_TYPES
            },
        }
    )


@pytest.mark.parametrize("seed", [1, 6])
def test_events_in_curated_order_skip_the_sort_and_give_the_rows_of_shuffled_events(seed, monkeypatch):
    """Curated files hold each user's events together, by (ts, arrival): then sorted_events does not sort,
    and shard_examples gives the same rows as from the same events in any order."""
    table = users_table(random_users(seed))
    table = table.set_column(table.schema.get_field_index("arrival"), "arrival", pa.array(np.arange(table.num_rows)))
    ordered = table.sort_by([("user_id", "ascending"), ("ts", "ascending"), ("arrival", "ascending")])
    shuffled = ordered.take(pa.array(np.random.default_rng(seed).permutation(table.num_rows)))
    sorts = []
    sort_indices = pc.sort_indices
    monkeypatch.setattr(pc, "sort_indices", lambda *a, **k: sorts.append(1) or sort_indices(*a, **k))
    training_rows.sorted_events(ordered)
    assert not sorts
    training_rows.sorted_events(shuffled)
    assert sorts
    cfg, tokens = replace(CFG, search_holdout=0.3), training_rows.ItemTokens.from_index(INDEX, N_TEXT)
    got, want = (training_rows.shard_examples(t, tokens, cfg) for t in (ordered, shuffled))
    assert sorted(map(as_sortable, reference_rows.table_examples(got.history))) == sorted(
        map(as_sortable, reference_rows.table_examples(want.history))
    )
    assert sorted(got.searches.to_pylist(), key=str) == sorted(want.searches.to_pylist(), key=str)


def test_events_tied_in_time_and_arrival_or_apart_from_their_user_are_still_sorted():
    table = users_table(
        {"u1": [ev(5, "view", "i2"), ev(5, "click", "i1")], "u2": [ev(1, "view", "i1")], "u3": [ev(2, "view", "i3")]}
    )
    table = table.take(pa.array([0, 1, 2, 3]))
    got = training_rows.sorted_events(table)
    assert got["event_type"].to_pylist()[:2] == ["click", "view"]  # the tie falls to the event type
    apart = training_rows.sorted_events(table.take(pa.array([2, 0, 3, 1])))  # u1's events split by u3's
    assert apart["user_id"].to_pylist() == ["u2", "u1", "u1", "u3"]


@pytest.mark.parametrize(
    "seed,window,min_history,holdout,eos,ties",
    [
        (1, 50, 3, 0.0, True, 0),
        (2, 2, 3, 0.5, True, 2),
        (3, 1, 1, 0.9, False, 0),
        (4, 3, 5, 0.3, False, 3),
        (5, 4, 2, 0.0, True, 1),
    ],
)
def test_shard_examples_match_the_per_user_reference(seed, window, min_history, holdout, eos, ties):
    cfg = PrepareConfig(
        history_window=window, min_history=min_history, search_holdout=holdout, history_eos=eos, tie_shuffles=ties
    )
    users = random_users(seed)
    table = users_table(users)
    got = training_rows.shard_examples(table, training_rows.ItemTokens.from_index(INDEX, N_TEXT), cfg)
    refs = {u: reference_user_examples(u, evs, INDEX, N_TEXT, cfg) for u, evs in users.items() if evs}
    assert sorted(map(as_sortable, reference_rows.table_examples(got.history))) == sorted(
        as_sortable(ex) for r in refs.values() for ex in r.history
    )
    want_pairs = [p for r in refs.values() for p in r.searches]
    assert sorted(SearchPair(**p) for p in got.searches.to_pylist()) == sorted(want_pairs)
    assert (got.users, got.short_users) == (len(refs), sum(r.short for r in refs.values()))
    assert got.unknown_item_events == sum(r.unknown_item_events for r in refs.values())
    assert got.searches_without_target == sum(r.searches_without_target for r in refs.values())
    assert got.searches_withheld == sum(r.searches_withheld for r in refs.values())
    assert got.history.num_rows and want_pairs  # the input exercises both kinds
    plain = {u: reference_user_examples(u, users[u], INDEX, N_TEXT, replace(cfg, tie_shuffles=0)) for u in refs}
    n_train = lambda rs: sum(ex.split == "train" for r in rs.values() for ex in r.history)  # noqa: E731
    assert got.tie_copy_rows == n_train(refs) - n_train(plain) and (got.tie_copy_rows > 0) == (ties > 0)


class CharTokenizer:
    """A stand-in tokenizer: one id per character."""

    def encode(self, text):
        return [10 + ord(c) % 50 for c in text]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]


def test_ragged_take_picks_rows_in_any_order_with_repeats():
    lists = [[1, 2, 3], [], [4], [5, 6]]
    got = training_rows.Ragged.from_lists(lists).take(np.array([3, 0, 1, 3, 2]))
    want = training_rows.Ragged.from_lists([lists[k] for k in (3, 0, 1, 3, 2)])
    assert got.values.tolist() == want.values.tolist() and got.lengths.tolist() == want.lengths.tolist()


@pytest.mark.parametrize("pool_busy", [False, True])
def test_search_rows_match_the_per_row_layouts(pool_busy):
    pairs = [
        SearchPair("train", "mug", "i3", 103),
        SearchPair("test", "耳机", "i4", 104),
        SearchPair("valid", "", "i5", 105),
        SearchPair("train", "kettle", "i1", 101),
        SearchPair("train", "mug", "i2", 102),
        SearchPair("test", "耳机", "i4", 104),
    ]  # repeated queries

    class OneByOne(CharTokenizer):  # while the pool is busy, encode_batch must not be called
        def encode_batch(self, texts):
            raise AssertionError("encode_batch while the tokenizer's pool is busy")

    tokenizer = OneByOne() if pool_busy else CharTokenizer()
    rows, n_tokens = training_rows.search_rows(pa.Table.from_pylist([p._asdict() for p in pairs]), tokenizer, pool_busy)
    encoded = CharTokenizer().encode_batch([p.query for p in pairs])
    assert reference_rows.table_examples(rows) == [
        reference_rows.search_example(p, ids) for p, ids in zip(pairs, encoded)
    ]
    assert n_tokens == sum(map(len, encoded))


@pytest.mark.parametrize("attribute_rows", [True, False])
def test_describe_rows_match_the_per_row_layout_and_counts_what_it_leaves_out(attribute_rows):
    items = pa.Table.from_pylist(
        [
            {
                "item_id": f"i{k}",
                "title": f"title {k}",
                "description": "words " * k if k != 2 else "",
                "category": "a > b",
                "brand": None,
                "attributes": [("color", "red")],
            }
            for k in range(6)
        ]
        + [
            {
                "item_id": "unknown",
                "title": "t",
                "description": "d",
                "category": None,
                "brand": None,
                "attributes": None,
            }
        ],
        schema=ITEMS,
    )
    cfg = replace(CFG, describe_holdout=0.5, max_describe_tokens=30, attribute_rows=attribute_rows)
    res = reference_rows.describe_table_rows(
        items, CharTokenizer(), training_rows.ItemTokens.from_index(INDEX, N_TEXT), cfg
    )
    tk = CharTokenizer()
    known = items.to_pylist()[:6]
    attr = {
        r["item_id"]: tk.encode_batch([attribute_text(r["title"], r["category"], r["brand"], r["attributes"])])[0]
        for r in known
    }
    want = [
        reference_rows.describe_example(
            r["item_id"], N_TEXT + INDEX[r["item_id"]], attr[r["item_id"]], tk.encode_batch([r["description"]])[0], cfg
        )
        for r in known
        if r["description"]
    ]
    bare = (
        [
            reference_rows.attribute_example(r["item_id"], N_TEXT + INDEX[r["item_id"]], attr[r["item_id"]], cfg)
            for r in known
            if not r["description"]
        ]
        if attribute_rows
        else []
    )
    assert reference_rows.table_examples(res.rows) == want + bare
    # i0 and i2 have no description: left out only without attribute rows
    assert (res.without_description, res.unknown_items) == (0 if attribute_rows else 2, 1)
    assert res.attribute_rows == len(bare) == (2 if attribute_rows else 0)
    assert all(DESC_ID not in ex.input_ids and ex.split == "train" for ex in bare)  # nothing teaches "no description"
    encoded = [
        attr[r["item_id"]] + tk.encode_batch([r["description"]])[0] for r in known if r["description"] or attribute_rows
    ]
    assert res.text_tokens == sum(map(len, encoded))


def test_catalog_search_rows_lead_from_each_items_attribute_text_to_the_item():
    items = pa.Table.from_pylist(
        [
            {
                "item_id": f"i{k}",
                "title": f"title {k}",
                "description": "words" if k % 2 else "",
                "category": "a > b",
                "brand": None,
                "attributes": None,
            }
            for k in range(4)
        ],
        schema=ITEMS,
    )
    cfg = replace(CFG, catalog_search_rows=True)
    res = reference_rows.describe_table_rows(
        items, CharTokenizer(), training_rows.ItemTokens.from_index(INDEX, N_TEXT), cfg
    )
    search = [ex for ex in reference_rows.table_examples(res.rows) if ex.kind == "search"]
    texts = {f"i{k}": attribute_text(f"title {k}", "a > b", None, None) for k in range(4)}
    assert sorted(search) == sorted(
        Example(
            "train",
            "search",
            texts[i],
            search_sequence(CharTokenizer().encode_batch([texts[i]])[0], N_TEXT + INDEX[i]),
            None,
            -1,
            [],
        )
        for i in texts
    )
    without = reference_rows.describe_table_rows(
        items, CharTokenizer(), training_rows.ItemTokens.from_index(INDEX, N_TEXT), CFG
    )
    assert reference_rows.table_examples(without.rows) == [
        ex for ex in reference_rows.table_examples(res.rows) if ex.kind == "describe"
    ]
    assert res.text_tokens == without.text_tokens  # the attribute texts are encoded once for both rows


def test_sort_rows_orders_like_the_packed_row_keys():
    """The output order (and so every shard's bytes) is the one earlier versions wrote: bucket, kind, subject,
    then the ids compared as packed int32 bytes."""
    rng = random.Random(3)
    exs = [
        Example(
            "train",
            rng.choice(["history", "search"]),
            rng.choice(["u1", "u2", "中"]),
            [rng.choice([1, 2, 256, 300, 65536]) for _ in range(rng.randint(0, 3))],
            rng.choice([None, "i1", ""]),
            rng.choice([-1, 5]),
            [rng.choice([1, 256])] * rng.randint(0, 2),
        )
        for _ in range(300)
    ]
    rows = pa.concat_tables(
        [
            training_rows.rows_table(
                "train",
                kind,
                pa.array([e.subject_id for e in group]),
                training_rows.Ragged.from_lists([e.input_ids for e in group]),
                pa.array([e.target_item for e in group], pa.string()),
                np.array([e.target_id for e in group]),
                training_rows.Ragged.from_lists([e.history_ids for e in group]),
            )
            for kind in ("history", "search")
            for group in [[e for e in exs if e.kind == kind]]
        ]
    )
    got = reference_rows.table_examples(training_rows.sort_rows(rows))
    bucket = lambda e: hashing.stable_bucket(f"{e.kind}\x00{e.subject_id}", training_rows.BUCKETS)  # noqa: E731
    want = sorted(
        exs,
        key=lambda e: (
            bucket(e),
            e.kind,
            e.subject_id,
            reference_rows.pack_ids(e.input_ids),
            e.target_item or "",
            e.target_id,
            reference_rows.pack_ids(e.history_ids),
        ),
    )
    assert [as_sortable(e) for e in got] == [as_sortable(e) for e in want]


_text = st.one_of(st.none(), st.sampled_from(["", "a", "b", "色", "颜色", "ä", "Z", "10", " "]), st.text(max_size=4))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            _text, _text, _text, st.one_of(st.none(), st.lists(st.tuples(st.text(max_size=3), _text), max_size=4))
        ),
        max_size=6,
    ),
    st.integers(0, 3),
    st.integers(0, 6),
)
def test_attribute_texts_match_the_per_item_text(rows, start, cut):
    """Column-wise attribute text == sequences.attribute_text per item: empty and null parts skipped, pairs
    sorted by key then value (repeated keys too), on a sliced table of several chunks (the pipeline cuts
    items into slices)."""
    # the per-item function cannot sort a repeated key whose values include None; a map may repeat keys
    rows = [r for r in rows if not r[3] or all(v is not None for k, v in r[3] if [p[0] for p in r[3]].count(k) > 1)]
    table = pa.table(
        {
            **{
                name: pa.array([r[i] for r in rows], pa.string())
                for i, name in enumerate(("title", "category", "brand"))
            },
            "attributes": pa.array([r[3] for r in rows], pa.map_(pa.string(), pa.string())),
        }
    )
    table = pa.concat_tables([table.slice(0, cut), table.slice(cut)]).slice(min(start, len(rows)))
    expected = [
        attribute_text(r["title"] or "", r["category"], r["brand"], r["attributes"] or []) for r in table.to_pylist()
    ]
    assert training_rows.attribute_text_column(table).to_pylist() == expected


def test_attribute_texts_skip_what_a_null_entry_spans():
    """A null attributes entry may still span key/value pairs in the map's children (Arrow allows it)."""
    offsets, keys, values = pa.array([0, 1, 2, 3], pa.int32()), pa.array(["a", "b", "c"]), pa.array(["1", "2", "3"])
    attributes = pa.MapArray.from_arrays(offsets, keys, values, mask=pa.array([False, True, False]))
    table = pa.table(
        {
            "title": ["t0", "t1", "t2"],
            "category": pa.array([None] * 3, pa.string()),
            "brand": pa.array([None] * 3, pa.string()),
            "attributes": attributes,
        }
    )
    assert training_rows.attribute_text_column(table).to_pylist() == ["t0 · a: 1", "t1", "t2 · c: 3"]


def test_item_tokens_and_event_types_read_alike_from_plain_and_dictionary_encoded_columns():
    """Item ids and event types give the same tokens and matches whether a column is plain or
    dictionary-encoded (as a Parquet read with read_dictionary gives them)."""
    ids = pa.chunked_array([pa.array(["i2", None, "unknown", "i1"]), pa.array(["i1", None])])
    tokens = training_rows.ItemTokens.from_index(INDEX, N_TEXT)
    encoded = pa.chunked_array([pc.dictionary_encode(chunk) for chunk in ids.chunks])  # a dictionary per chunk
    assert (
        tokens.tokens(encoded).tolist()
        == tokens.tokens(ids).tolist()
        == [N_TEXT + INDEX["i2"], -1, -1, N_TEXT + INDEX["i1"], N_TEXT + INDEX["i1"], -1]
    )
    types = pa.array(["view", "search", None, "click", "view"])
    assert (
        training_rows.is_in(pc.dictionary_encode(types), {"view", "click"}).tolist()
        == training_rows.is_in(types, {"view", "click"}).tolist()
        == [True, False, False, True, True]
    )
    many = [f"x{k}" for k in range(127)] + ["view"]  # int8 indices: null must not become index 128
    narrow = pa.DictionaryArray.from_arrays(pa.array([127, None, 0], pa.int8()), pa.array(many))
    assert training_rows.is_in(narrow, {"view"}).tolist() == [True, False, False]
    ids8 = pa.DictionaryArray.from_arrays(
        pa.array([127, None], pa.int8()), pa.array([f"x{k}" for k in range(127)] + ["i3"])
    )
    assert tokens.tokens(ids8).tolist() == [N_TEXT + INDEX["i3"], -1]

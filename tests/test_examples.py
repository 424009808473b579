"""Building the three kinds of example and their splits (plain functions, no Beam)."""
import os
import subprocess
import sys
from dataclasses import replace

import pyarrow as pa

from shopllm import examples
from shopllm.config import PrepareConfig
from shopllm.examples import Event, Example, SearchPair
from shopllm.vocab import BOS_ID, EOS_ID, HIST_ID, QUERY_ID, REC_ID

N_TEXT = 100
INDEX = {f"i{k}": k for k in range(10)}  # item_id -> vocab index; token = N_TEXT + index
CFG = PrepareConfig(history_window=50, min_history=3)


def tok(*items):
    return [N_TEXT + INDEX[i] for i in items]


def ev(ts, etype, item=None, query=None, session="s1", arrival=0, event_id=""):
    return Event(ts, arrival, event_id, session, etype, item, query)


def test_holdout_split_is_stable_across_processes_and_near_the_share():
    keys = [f"query {k}" for k in range(4000)]
    here = [examples.holdout_split(k, 0.2) for k in keys[:50]]
    code = ("from shopllm.examples import holdout_split; "
            "print(','.join(holdout_split(f'query {k}', 0.2) for k in range(50)))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip().split(",") == here
    splits = [examples.holdout_split(k, 0.2) for k in keys]
    assert 0.08 < splits.count("valid") / len(keys) < 0.12
    assert 0.08 < splits.count("test") / len(keys) < 0.12
    assert all(examples.holdout_split(k, 0.0) == "train" for k in keys[:100])


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
    res = examples.build_user_examples("u1", events, INDEX, N_TEXT, CFG)
    # order: i1, i2, i9, i3, i4 -> test i4, valid i3, train i1 i2 i9
    assert res.history == [
        Example("valid", "history", "u1", [BOS_ID, HIST_ID, *tok("i1", "i2", "i9")], "i3", tok("i3")[0], tok("i1", "i2", "i9")),
        Example("test", "history", "u1", [BOS_ID, HIST_ID, *tok("i1", "i2", "i9", "i3")], "i4", tok("i4")[0],
                tok("i1", "i2", "i9", "i3")),
        Example("train", "history", "u1", [BOS_ID, HIST_ID, *tok("i1", "i2", "i9"), EOS_ID], None, -1, []),
    ]
    assert res.unknown_item_events == 1
    assert not res.short


def test_long_history_is_cut_into_windows_and_prompts_keep_the_last_window():
    items = [f"i{k % 10}" for k in range(9)]  # i0..i8, no repeats
    events = [ev(t, "view", item) for t, item in enumerate(items)]
    res = examples.build_user_examples("u", events, INDEX, N_TEXT, replace(CFG, history_window=3))
    train = [ex.input_ids for ex in res.history if ex.split == "train"]
    # 7 train items cut from the end into windows of 3: [i0] [i1 i2 i3] [i4 i5 i6]
    assert train == [[BOS_ID, HIST_ID, *tok(*w), EOS_ID] for w in (["i0"], ["i1", "i2", "i3"], ["i4", "i5", "i6"])]
    valid = next(ex for ex in res.history if ex.split == "valid")
    assert valid.input_ids == [BOS_ID, HIST_ID, *tok("i4", "i5", "i6")]
    assert valid.history_ids == tok(*items[:7])  # the whole history is masked, not just the window


def test_short_user_goes_to_train_only_and_is_counted():
    res = examples.build_user_examples("u", [ev(1, "view", "i1"), ev(2, "click", "i2")], INDEX, N_TEXT, CFG)
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
    res = examples.build_user_examples("u", events, INDEX, N_TEXT, replace(CFG, search_holdout=0.0))
    assert res.searches == [SearchPair("train", "earbuds", "i2", tok("i2")[0]),
                            SearchPair("train", "kettle steel", "i3", tok("i3")[0])]
    assert res.searches_without_target == 1


def test_search_pair_whose_target_is_a_held_out_history_event_is_not_trained_on():
    events = [ev(1, "view", "i1"), ev(2, "view", "i2"), ev(3, "search", query="mug"), ev(4, "click", "i3"),
              ev(5, "view", "i4")]  # valid target i3 (the click after the search), test target i4
    res = examples.build_user_examples("u", events, INDEX, N_TEXT, replace(CFG, search_holdout=0.0))
    assert res.searches == []
    assert res.searches_withheld == 1


def test_search_example_layouts():
    pair = SearchPair("train", "mug", "i3", 103)
    assert examples.search_example(pair, [50, 51]) == Example(
        "train", "search", "mug", [BOS_ID, QUERY_ID, 50, 51, REC_ID, 103, EOS_ID], None, -1, [])
    held = examples.search_example(pair._replace(split="test"), [50, 51])
    assert held == Example("test", "search", "mug", [BOS_ID, QUERY_ID, 50, 51, REC_ID], "i3", 103, [])


def test_describe_split_by_item_hash_and_cut_to_max_tokens():
    cfg = replace(CFG, describe_holdout=0.5, max_describe_tokens=10)
    rows = [examples.describe_example(f"item-{k}", 200 + k, [20, 21], list(range(30, 50)), cfg) for k in range(200)]
    assert all(len(r.input_ids) == 10 for r in rows)
    held = [r for r in rows if r.split != "train"]
    assert 60 < len(held) < 140
    assert all(r.target_item == r.subject_id and r.target_id == -1 for r in held)
    assert [r.split for r in rows] == [examples.describe_example(r.subject_id, 0, [], [], cfg).split for r in rows]


def test_chunk_from_end():
    assert examples.chunk_from_end([1, 2, 3, 4, 5], 2) == [[1], [2, 3], [4, 5]]
    assert examples.chunk_from_end([1, 2], 5) == [[1, 2]]
    assert examples.chunk_from_end([], 3) == []


def test_packed_rows_become_a_tokens_table():
    rows = [Example("train", "history", "u", [0, 3, 105, 2], None, -1, []),
            Example("test", "search", "q", [0, 4, 50, 5], "i5", 105, [101, 102])]
    packed = [examples.pack(r) for r in rows]
    assert [examples.unpack(p) for p in packed] == rows
    table = examples.rows_to_table(packed)
    assert table.to_pylist()[1] == {"kind": "search", "subject_id": "q", "input_ids": [0, 4, 50, 5],
                                    "target_item": "i5", "target_id": 105, "history_ids": [101, 102]}
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert examples.count_tokens(packed) == 8
    assert examples.rows_to_table([]).num_rows == 0

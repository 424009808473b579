"""The MovieLens benchmark's data path, on a tiny stand-in for ML-100k (the real data ships with recbole)."""

import pytest

from benchmarks.ml100k import DATE, DEFAULT_CONFIG, MovieLens, build_shards, read_config, write_toml
from shopllm import storage
from shopllm.schemas import TOKENS
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import ATTR_ID, BOS_ID, EOS_ID, HIST_ID, QUERY_ID, REC_ID, ItemVocab

TITLES = {str(k): f"Movie {k} (199{k}) · Drama, Comedy" for k in range(1, 9)}
RATINGS = [  # (user, item, timestamp, file row) in file order
    ("1", "5", 400, 0),
    ("1", "1", 100, 1),
    ("1", "2", 200, 2),
    ("1", "3", 200, 3),
    ("1", "4", 300, 4),
    ("1", "6", 400, 5),
    ("2", "8", 50, 6),
    ("2", "7", 60, 7),
    ("2", "1", 70, 8),
    ("2", "2", 80, 9),
]


def test_ratings_go_through_ingest_and_prepare_split_by_time_with_ties_by_file_order(tmp_path):
    config = tmp_path / "ml100k.toml"
    write_toml(read_config(DEFAULT_CONFIG), config)  # the benchmark's own [prepare] settings
    out = tmp_path / "out"
    build_shards(MovieLens(TITLES, RATINGS), out, str(config))

    tk = TextTokenizer.load(out / "vocab" / "tokenizer.json")
    vocab = ItemVocab.load(out / "vocab")
    item_of = lambda t: vocab.item_of(t, tk.n_text)  # noqa: E731
    rows = {s: storage.read_partition(out, f"{TOKENS}/{s}", DATE).to_pylist() for s in ("train", "valid", "test")}
    held = {(s, r["subject_id"]): r["target_item"] for s in ("valid", "test") for r in rows[s]}
    # user 1: items 5 and 6 share the last second, 5 comes first in the file: valid 5, test 6
    assert held == {("valid", "1"): "5", ("test", "1"): "6", ("valid", "2"): "1", ("test", "2"): "2"}

    histories = [
        [item_of(t) for t in r["input_ids"][2:]]
        for r in rows["train"]
        if r["kind"] == "history" and r["subject_id"] == "1"
    ]
    assert all(
        r["input_ids"][:2] == [BOS_ID, HIST_ID] and r["input_ids"][-1] != EOS_ID
        for r in rows["train"]
        if r["kind"] == "history"
    )  # history_eos = false
    # the original order and, among 7 random orders of items 2 and 3 (rated in the same second), the other one
    assert sorted(histories) == [["1", "2", "3", "4"], ["1", "3", "2", "4"]]
    assert [r["subject_id"] for r in rows["train"] if r["kind"] == "history"].count("2") == 1  # no ties: no copies

    texts = {r["subject_id"]: r["input_ids"] for r in rows["train"] if r["kind"] == "describe"}
    assert set(texts) == set(TITLES)  # no descriptions: each movie's attribute text alone
    for item, ids in texts.items():
        assert ids[:3] == [BOS_ID, tk.n_text + vocab.index[item], ATTR_ID]
        assert tk.decode(ids[3:]).startswith(TITLES[item].split(" · ")[0])
    searches = {item_of(r["input_ids"][-2]): r["input_ids"] for r in rows["train"] if r["kind"] == "search"}
    assert set(searches) == set(TITLES)  # catalog_search_rows: the same text leads to the movie
    for item, ids in searches.items():
        assert ids[:2] == [BOS_ID, QUERY_ID] and ids[-3:] == [REC_ID, tk.n_text + vocab.index[item], EOS_ID]
        assert ids[2:-3] == texts[item][3:]


def test_quick_benchmarks_exit_zero_and_write_their_results(tmp_path, monkeypatch):
    """`make bench` fails when any benchmark's main returns anything but 0 (score's once returned its dict)."""
    from benchmarks import run_all

    monkeypatch.chdir(tmp_path)
    assert run_all.main(["--quick", "--only", "prepare,train,score"]) == 0
    assert {p.stem for p in (tmp_path / "bench_out").glob("*.json")} == {"prepare", "train_bench", "score"}


def test_prepare_ab_compares_two_source_trees(tmp_path, capsys):
    """benchmarks.prepare_ab runs each version in its own process; here both are this tree."""
    from pathlib import Path

    from benchmarks import prepare_ab

    root = str(Path(prepare_ab.__file__).resolve().parents[1])
    assert (
        prepare_ab.main([f"one={root}", f"two={root}", "--rounds", "1", "--size", "quick", "--work", str(tmp_path)])
        == 0
    )
    table = capsys.readouterr().out.splitlines()[-3:]
    assert table[0].split()[:5] == ["version", "baseline", "pipeline", "step", "step"]
    for line, name in zip(table[1:], ("one", "two")):
        name_, *figures = line.split()
        assert name_ == name and all(0 < float(f) < 60 for f in figures)


def test_bm25_baseline_finds_chinese_and_english_items_by_their_words():
    """The query benchmark's baseline (bm25s): Chinese found by its characters, ranks full, ties pessimistic."""
    from benchmarks.query_bench import bm25_ranks

    docs = [
        "索尼 无线蓝牙耳机 黑色",
        "小米 手机 12GB",
        "Levi's slim jeans, blue",
        "Uniqlo loose jeans, black",
        "绿联 充电器 65W",
    ]
    queries = ["蓝牙耳机", "loose jeans", "black", "65w 充电器", "咖啡豆"]
    # the last query shares no word with any item: every item ties with its target, which then ranks last
    assert bm25_ranks(docs, queries, [0, 3, 3, 4, 1]) == [1, 1, 1, 1, 5]
    assert bm25_ranks(docs, ["jeans"], [-1]) == [6]  # a target not among the candidates is a miss


@pytest.mark.slow  # two quick nightly runs: ~45 s
def test_quick_language_benchmarks_run_both_shops(tmp_path, monkeypatch):
    """The describe and query benchmarks on small shops: the nightly job runs once per shop (reused by the
    second benchmark) and each writes its figures for both shops."""
    import json

    from benchmarks import run_all

    monkeypatch.chdir(tmp_path)
    assert run_all.main(["--quick", "--only", "describe,query"]) == 0
    describe = json.loads((tmp_path / "bench_out/describe.json").read_text())
    query = json.loads((tmp_path / "bench_out/query.json").read_text())
    for shop in ("sample", "other"):
        figures = describe[shop]["languages"]["all"]
        assert 0 <= figures["published"] <= 1 and figures["blocking_after_gate"] == 0
        assert describe[shop]["generation"]["tokens_per_s"] > 0
        assert query[shop]["searches"] > 0 and {"query_scope", "model_alone", "bm25"} <= set(query[shop])


def test_growth_exponent_is_the_log_log_slope():
    from benchmarks.scale import exponent

    sizes = [1e3, 1e4, 1e5]
    assert exponent(sizes, [2 * x for x in sizes]) == pytest.approx(1.0)
    assert exponent(sizes, [x**1.5 for x in sizes]) == pytest.approx(1.5)
    assert exponent([10.0], [1.0]) is None


@pytest.mark.slow  # sample + six stages at two tiny sizes, 20 training steps: ~55 s
def test_scale_benchmark_measures_every_stage(tmp_path, monkeypatch):
    import json

    from benchmarks import run_all
    from benchmarks.scale import STAGES

    monkeypatch.chdir(tmp_path)
    assert run_all.main(["--quick", "--only", "scale"]) == 0
    result = json.loads((tmp_path / "bench_out/scale.json").read_text())
    assert set(result["sizes"]) == {"tiny", "tiny2"} and set(result["exponents"]) == set(STAGES)
    for size in result["sizes"].values():
        assert set(size["stages"]) == set(STAGES)
        assert all(s["wall_s"] > 0 and s["peak_mb"] > 50 for s in size["stages"].values())
        assert size["train"]["steps"] == 20 and size["train"]["tokens_per_s"] > 0
        assert size["descriptions_generated"] > 0  # the first night describes the catalog
    assert all(isinstance(e, float) for e in result["exponents"].values())
    assert "every_stage_exponent_le_1.2" in result["targets"]


def test_ml100k_nightly_holds_out_each_users_last_rating_and_scores_the_published_lists():
    from benchmarks.ml100k_nightly import heldout_metrics, hold_out_last

    ratings = [("u1", "a", 5, 0), ("u1", "b", 9, 1), ("u1", "c", 9, 2), ("u2", "a", 3, 3), ("u2", "d", 1, 4)]
    shown, heldout = hold_out_last(MovieLens({}, ratings))
    assert heldout == {"u1": "c", "u2": "a"}  # by time, a tie going to the later file row
    assert [r[3] for r in shown.ratings] == [0, 1, 4]
    recs = [
        {"scope": "user", "subject_id": "u1", "item_id": "x", "rank": 1},
        {"scope": "user", "subject_id": "u1", "item_id": "c", "rank": 3},
        {"scope": "session", "subject_id": "u2", "item_id": "a", "rank": 1},  # not the user's list
    ]
    m = heldout_metrics(recs, heldout)
    assert (m["n"], m["users_without_a_list"], m["hr@10"]) == (2, 1, 0.5)
    assert m["ndcg@10"] == pytest.approx(0.5 / 2)  # 1 / log2(3 + 1) for u1, a miss for u2

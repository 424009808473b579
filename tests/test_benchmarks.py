"""The MovieLens benchmark's own data choices (the data itself ships with recbole, not needed here)."""
import numpy as np

from benchmarks.ml100k import MovieLens, item_text_rows, tie_shuffled, windows
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import ATTR_ID, BOS_ID, DESC_ID, EOS_ID, HIST_ID, QUERY_ID, REC_ID, ItemVocab


def test_tie_shuffle_reorders_only_items_rated_in_the_same_second():
    ratings = [(10, 0, "a"), (10, 1, "b"), (10, 2, "c"), (20, 3, "d"), (30, 4, "e"), (30, 5, "f")]
    orders = {tuple(tie_shuffled(ratings, np.random.default_rng(seed))) for seed in range(200)}
    for order in orders:
        assert sorted(order[:3]) == ["a", "b", "c"] and order[3] == "d" and sorted(order[4:]) == ["e", "f"]
    assert len(orders) == 12  # every order of the 3-item run times every order of the 2-item run


def test_windows_cover_the_history_and_only_the_last_may_end_with_eos():
    tokens = list(range(100, 125))
    seqs = windows(tokens, window=10, stride=10)
    assert all(s[:2] == [BOS_ID, HIST_ID] for s in seqs)
    assert seqs[-1][-1] == EOS_ID and all(EOS_ID not in s for s in seqs[:-1])
    assert seqs[-1][2:-1] == tokens[-10:] and set(t for s in seqs for t in s[2:] if t != EOS_ID) == set(tokens)
    assert all(EOS_ID not in s for s in windows(tokens, window=10, stride=10, eos=False))


def test_item_text_rows_tie_each_item_to_its_text_both_ways():
    titles = {"1": "Toy Story (1995) · Animation, Comedy", "2": "GoldenEye (1995) · Action, Thriller"}
    tk = TextTokenizer.train(list(titles.values()) * 5, vocab_size=300)
    items = ItemVocab([])
    items.extend(titles)
    rows = item_text_rows(MovieLens(titles, []), tk, items, tk.n_text)
    assert [r["kind"] for r in rows] == ["describe", "search"] * 2
    for (item, text), describe, search in zip(titles.items(), rows[::2], rows[1::2]):
        token, ids = tk.n_text + items.index[item], tk.encode(text)
        assert describe["input_ids"] == [BOS_ID, token, ATTR_ID, *ids, DESC_ID, EOS_ID]
        assert search["input_ids"] == [BOS_ID, QUERY_ID, *ids, REC_ID, token, EOS_ID]
        assert tk.decode(ids) == text

"""Search that understands the query: the model's query scope beside BM25, on the same held-out searches.

    python -m benchmarks.query_bench [--quick] [--shops sample,other] [--work bench_out/shops]

For each shop (benchmarks.shops: the sample, and a second synthetic shop with other words) the nightly
job runs with its defaults (or is reused from the describe benchmark); then every held-out search row of
the test split (queries never seen in training) is ranked over the same candidates, today's whole catalog:

- query scope: what the nightly publishes and `shopllm evaluate` reports (shopllm.evaluation.ranks_of):
  the model's log-probabilities plus BM25 with the weight fitted on the valid split (shopllm.lexical);
- model alone: the model's log-probabilities (what clicks taught it), for the record;
- BM25: `bm25s` (Lucene's scoring, k1=1.5, b=0.75; an implementation independent of ours) over each
  item's title, category path, brand and attribute keys and values, with the same terms
  (shopllm.lexical.terms: lowercased Latin/digit words, Chinese runs as characters and bigrams).

Ranks are full, ties pessimistic (shopllm.metrics), a target missing from the catalog counts as a miss.
Reports hr@10 and ndcg@10 of each and the ratio query scope / BM25 (the target is > 1).
Writes bench_out/query.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks import shops
from shopllm import metrics, modelstore, storage
from shopllm.evaluation import K, _fit, ranks_of
from shopllm.lexical import item_text, lexical_weight, terms
from shopllm.ranking import Ranker
from shopllm.schemas import CURATED_ITEMS, TOKENS, TOKENS_SCHEMA
from shopllm.tokenizer import TextTokenizer


def bm25_ranks(docs: list[str], queries: list[str], targets: list[int]) -> list[int]:
    """1-based rank of each target doc under BM25 for its query (len(docs) + 1 when the target is -1)."""
    import bm25s

    retriever = bm25s.BM25(k1=1.5, b=0.75)
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in terms(d)] for d in docs]
    retriever.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False)
    out = []
    for q, t in zip(queries, targets):
        if t < 0:
            out.append(len(docs) + 1)
            continue
        known = [vocab[w] for w in terms(q) if w in vocab]
        scores = (
            torch.from_numpy(np.asarray(retriever.get_scores(known), dtype=np.float32))[None]
            if known
            else torch.zeros(1, len(docs))
        )
        out.append(int(metrics.target_ranks(scores, torch.tensor([t]))[0]))
    return out


def summary(ranks: list[int]) -> dict:
    if not ranks:
        return {"n": 0}
    m = metrics.metrics_from_ranks(torch.tensor(ranks), ks=(K,))
    return {"n": len(ranks), f"hr@{K}": round(m[f"hr@{K}"], 4), f"ndcg@{K}": round(m[f"ndcg@{K}"], 4)}


def compare(out: Path, date: str = shops.DATE) -> dict:
    """The query scope (the model blended with its own BM25 as the nightly publishes it), the model alone,
    and bm25s alone, on the held-out search rows of one finished nightly run."""
    items = storage.read_partition(out, CURATED_ITEMS, date).to_pylist()
    test = storage.read_partition(out, f"{TOKENS}/test", date, TOKENS_SCHEMA).to_pylist()
    rows = [r for r in test if r["kind"] == "search" and r["target_item"]]
    loaded = modelstore.load(out, modelstore.latest_version(out), "cpu")
    weight = lexical_weight(loaded.config)
    ranker = Ranker(
        loaded.model,
        TextTokenizer.load(loaded.tokenizer_path),
        loaded.items,
        [r["item_id"] for r in items],
        "cpu",
        item_texts={r["item_id"]: item_text(r) for r in items},
        lexical_weight=weight,
    )
    prompts = [_fit(r["input_ids"], ranker.block_size) for r in rows]
    targets, queries, no_exclude = [r["target_item"] for r in rows], [r["subject_id"] for r in rows], [() for _ in rows]
    shipped = ranks_of(ranker, prompts, targets, no_exclude, queries=queries)
    alone = ranks_of(ranker, prompts, targets, no_exclude)
    by_id = {r["item_id"]: r for r in items}
    docs = [item_text(by_id[i]) for i in ranker.col_items]  # the model's candidates, in its column order
    lexical = bm25_ranks(docs, queries, [ranker.col_index.get(t, -1) for t in targets])
    result = {
        "searches": len(rows),
        "distinct_queries": len(set(queries)),
        "candidates": len(docs),
        "lexical_weight": weight,
        "query_scope": summary(shipped),
        "model_alone": summary(alone),
        "bm25": summary(lexical),
    }
    for m in (f"hr@{K}", f"ndcg@{K}"):
        base = result["bm25"].get(m)
        result[f"{m}_ratio"] = round(result["query_scope"][m] / base, 2) if base else None
    return result


def main(argv=None) -> int:
    args = shops.parse_args(argv, __doc__, "bench_out/query.json")
    results = {}
    for shop in args.shops.split(","):
        results[shop] = compare(shops.nightly(shop, Path(args.work), quick=args.quick))
        r = results[shop]
        print(
            f"{shop}: {r['searches']} held-out searches ({r['distinct_queries']} queries), {r['candidates']} candidates"
        )
        print(f"  {'':12} {'hr@10':>7} {'ndcg@10':>8}")
        for side in ("query_scope", "model_alone", "bm25"):
            print(f"  {side:12} {r[side].get('hr@10', float('nan')):7.4f} {r[side].get('ndcg@10', float('nan')):8.4f}")
        print(
            f"  query scope (BM25 weight {r['lexical_weight']}) / bm25: hr@10 {r['hr@10_ratio']}x, "
            f"ndcg@10 {r['ndcg@10_ratio']}x (target > 1)"
        )
    shops.write_results(args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

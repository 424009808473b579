"""The approximate ranking index (shopllm.ann) against exact ranking: recall@10, recall@100 and queries/s.

    python -m benchmarks.ann_bench [--sizes 10000 100000] [--queries 1000] [--threads 2]

Item tables are synthetic (no trained model at these sizes), 128 wide like the default model:
- "clustered": items around 256 random centres (noise 0.5 of a centre's scale), each row scaled by a
  log-normal "popularity" (sd 0.3), as trained item embeddings are; a query is a random centre plus noise, as a
  hidden state that predicts one kind of item.
- "gaussian": i.i.d. normal items and queries, the hard case for any index (no structure to exploit).
Exact = what `rank_batch` does after the forward pass: h @ W.T, log-softmax, `ranking.top_k`. Approximate =
`ItemIndex.search` for K candidates + `ItemIndex.score_candidates` (exact rescoring, estimated normaliser, top
K). Both timed on batches of 64 queries (ScoreConfig.batch_size) with the same thread count, best of 3 passes
after a warm-up batch; the transformer forward, the same for both, is left out.
recall@K = |approximate top-K ∩ exact top-K| / K, averaged over queries.
Prints a table; writes bench_out/ann.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from shopllm.ann import ItemIndex
from shopllm.ranking import top_k

D = 128
BATCH = 64
REPEATS = 3
SETTINGS = [("ivf", dict(nprobe=16)), ("ivf", dict(nprobe=64)), ("hnsw", dict(ef=64)), ("hnsw", dict(ef=128))]


def table(kind: str, n: int, n_queries: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        return torch.randn(n, D, generator=g), torch.randn(n_queries, D, generator=g)
    centres = torch.randn(256, D, generator=g)
    items = centres[torch.randint(0, 256, (n,), generator=g)] + 0.5 * torch.randn(n, D, generator=g)
    items = items * torch.exp(0.3 * torch.randn(n, 1, generator=g))
    queries = centres[torch.randint(0, 256, (n_queries,), generator=g)] + 0.5 * torch.randn(n_queries, D, generator=g)
    return items / D**0.5, queries  # logits of a few units, as a trained model's


def batches(h: torch.Tensor):
    return [h[i : i + BATCH] for i in range(0, len(h), BATCH)]


def timed(rank_one, h: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(ids of every query, queries/s): one warm-up batch, then the best of REPEATS passes (a shared machine)."""
    rank_one(h[:BATCH])
    best = float("inf")
    for _ in range(REPEATS):
        t = time.perf_counter()
        ids = torch.cat([rank_one(b) for b in batches(h)])
        best = min(best, time.perf_counter() - t)
    return ids, len(h) / best


def exact_rank(w: torch.Tensor, h: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
    return timed(lambda b: top_k(torch.log_softmax(b @ w.t(), dim=1), k)[1], h)


def approx_rank(index: ItemIndex, h: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
    return timed(lambda b: index.score_candidates(b, index.search(b, k), k)[1], h)


def recall(got: torch.Tensor, want: torch.Tensor) -> float:
    return sum(len(set(a) & set(b)) for a, b in zip(got.tolist(), want.tolist())) / want.numel()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tables", nargs="+", default=["clustered", "gaussian"])
    args = p.parse_args(argv)
    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rows = []
    cols = ("build s", "r@10", "r@100", "q/s @10", "q/s @100")
    print(f"{'table':<10} {'items':>7} {'index':<16} " + " ".join(f"{c:>8}" for c in cols))
    for kind in args.tables:
        for n in args.sizes:
            w, h = table(kind, n, args.queries)
            want10, qps10 = exact_rank(w, h, 10)
            want100, qps100 = exact_rank(w, h, 100)
            rows.append(
                dict(table=kind, items=n, index="exact", build_s=0.0, r10=1.0, r100=1.0, qps10=qps10, qps100=qps100)
            )
            print(f"{kind:<10} {n:>7} {'exact (torch)':<16} {0:>8.1f} {1:>8.3f} {1:>8.3f} {qps10:>8.0f} {qps100:>8.0f}")
            built: dict[str, ItemIndex] = {}
            for index_kind, knobs in SETTINGS:
                t = time.perf_counter()
                if index_kind not in built:
                    built[index_kind] = ItemIndex(w, index_kind, **knobs)
                    build_s = time.perf_counter() - t
                index = built[index_kind]
                if index_kind == "ivf":
                    index.faiss_index.nprobe = knobs["nprobe"]
                else:
                    index.faiss_index.hnsw.efSearch = knobs["ef"]
                got10, a10 = approx_rank(index, h, 10)
                got100, a100 = approx_rank(index, h, 100)
                name = f"{index_kind} " + ",".join(f"{k}={v}" for k, v in knobs.items())
                r10, r100 = recall(got10, want10), recall(got100, want100)
                rows.append(
                    dict(table=kind, items=n, index=name, build_s=build_s, r10=r10, r100=r100, qps10=a10, qps100=a100)
                )
                print(f"{kind:<10} {n:>7} {name:<16} {build_s:>8.1f} {r10:>8.3f} {r100:>8.3f} {a10:>8.0f} {a100:>8.0f}")
    out = Path("bench_out")
    out.mkdir(exist_ok=True)
    (out / "ann.json").write_text(json.dumps(dict(threads=args.threads, queries=args.queries, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

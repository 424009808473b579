"""Approximate next-item ranking: a FAISS index over the catalog's output item embeddings (issue 18).

Exact ranking (`shopllm.ranking.rank_batch`) scores every catalog item for every subject: the item logits
are `h @ W.T`, with h the final hidden state at the prompt's last position (after ln_f) and W the rows that
score item tokens (`GPT.item_weight()`: the item rows of the input embedding when `tie_items`, else the
separate output table; no bias, no scale), then a log-softmax and a top-K: work linear in the catalog per
subject. Above a catalog size (`ScoreConfig.ann_above`) the ranker instead searches an index of W's
catalog rows for the largest inner products with h (maximum inner-product search), and only the candidates it
returns are scored:

- `ItemIndex.rank` asks the index for k + (the row's excluded items) candidates, so a row still has k eligible
  items after its exclusions are dropped; rescores the candidates exactly with torch (`W[c] · h`), sorts them
  like `ranking.top_k` (score, then column) and returns (scores, cols) with top_k's contract. With an exact
  index (`kind="flat"`, tests) the ranking equals exact ranking's.
- Searches blended with BM25 (`Ranker.lexical`) add the query's k best BM25 columns to the candidates, so
  items the model ranks low but the text matches well can still come up, as they do in exact ranking (the
  blend's top k is exact when it lies within those two candidate sets; an item that is in neither can be
  missed even with an exact index).

The `score` column in this mode: the exact log-probability needs the normaliser logsumexp(h @ W.T) over
every item, which costs as much as exact ranking. The score is `logit - Z` with Z = logsumexp over the
retrieved candidates (exact) + the other items' mass estimated from a fixed uniform sample of
NORMALISER_SAMPLE items (scaled up to the items that were not retrieved); like exact ranking's log-softmax it
runs over every item the model knows, not only today's catalog. Z is one number per row, so it never changes
the order; it is exact when the model knows at most NORMALISER_SAMPLE items, and otherwise the
score is the model log-probability up to that estimate's error, the same for every item of a row (small for a
peaked distribution, whose mass the retrieved candidates hold; ~0.1 nat at worst in tests/test_ann.py's flat,
heavy-tailed 20k-item case). Query scores add the BM25 blend as usual.

faiss is optional (`pip install 'shopllm[ann]'`); nothing imports it unless an index is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shopllm.errors import ConfigError

KINDS = ("ivf", "hnsw", "flat")  # flat: exact inner-product search (tests, benchmarks)
NORMALISER_SAMPLE = 4096  # items sampled (fixed, seeded) to estimate the score's normaliser
HNSW_M = 32  # graph neighbours per item
HNSW_EF_CONSTRUCTION = 80  # build-time search breadth
IVF_TRAIN_PER_LIST = 64  # k-means trains on at most this many items per list


@dataclass(frozen=True)
class AnnSettings:
    """When and how the ranker searches an item index (from `ScoreConfig`: see `settings`)."""

    above: int = 1_000_000  # catalogs of more columns use the index; 0 = never
    kind: str = "ivf"  # "ivf" (IVF-Flat), "hnsw" (HNSW graph) or "flat" (exact)
    nprobe: int = 64  # ivf: lists searched per subject
    ef: int = 128  # hnsw: search breadth
    seed: int = 0  # k-means initialisation and the normaliser's sample

    def wanted(self, n_columns: int) -> bool:
        return self.above > 0 and n_columns > self.above


def settings(cfg) -> AnnSettings | None:
    """The index settings of a `ScoreConfig`; None when it never uses one (ann_above = 0)."""
    if cfg.ann_above == 0:
        return None
    return AnnSettings(above=cfg.ann_above, kind=cfg.ann_index, nprobe=cfg.ann_nprobe, ef=cfg.ann_ef)


def require_faiss():
    """The faiss module, or one clear line saying how to get it."""
    try:
        import faiss
    except ImportError:
        raise ConfigError(
            "config.score.ann_above asks for an approximate ranking index but faiss is not installed: "
            "pip install 'shopllm[ann]' (faiss-cpu), or set score.ann_above = 0"
        ) from None
    return faiss


class ItemIndex:
    """A FAISS index over item vectors: `weight` (N, d) the item table and `columns` (C,) its rows that are the
    catalog's columns (None: all N, in order); search returns columns. Exact rescoring reads `weight` itself
    (no second copy besides the one FAISS keeps).

    kind "flat": exact inner product (IndexFlatIP). "ivf": IVF-Flat with inner-product lists (~4·sqrt(C) of
    them, k-means on a sample), `nprobe` searched per query; deterministic. "hnsw": an HNSW graph searched with
    `ef` on inner products directly (benchmarks/ann_bench.py: far better recall than the usual MIPS-to-L2 extra
    coordinate when item norms differ); its multi-threaded build is not deterministic, so reruns can differ.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        kind: str = "ivf",
        *,
        columns: torch.Tensor | None = None,
        nprobe: int = 64,
        ef: int = 128,
        seed: int = 0,
    ):
        if kind not in KINDS:
            raise ConfigError(f"ann index: expected one of {', '.join(KINDS)}, got {kind!r}")
        faiss = require_faiss()
        self.kind = kind
        self.weight = weight.detach()  # (N, d), where the model keeps it
        if columns is None:
            columns = torch.arange(weight.size(0))
        self.columns = columns.to(self.weight.device)  # (C,) row of `weight` of each column
        C, d = len(columns), weight.size(1)
        self.n = C
        w = np.ascontiguousarray(self.weight[self.columns].float().cpu().numpy())  # freed once FAISS has it
        if kind == "flat":
            self.faiss_index = faiss.IndexFlatIP(d)
            self.faiss_index.add(w)
        elif kind == "hnsw":
            self.faiss_index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            self.faiss_index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            self.faiss_index.add(w)
            self.faiss_index.hnsw.efSearch = ef
        else:
            nlist = max(1, min(int(4 * math.sqrt(C)), C // 39 or 1))  # faiss wants >= 39 training points per list
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            n_train = min(C, nlist * IVF_TRAIN_PER_LIST)
            train = w if n_train == C else w[np.random.default_rng(seed).choice(C, n_train, replace=False)]
            index.train(np.ascontiguousarray(train))
            index.add(w)
            index.nprobe = min(nprobe, nlist)
            self.faiss_index = index
            self._quantizer = quantizer  # the IVF index does not own it
        N = self.n_rows = weight.size(0)
        g = torch.Generator().manual_seed(seed)
        self.sample = (  # rows of `weight`: the normaliser is over every item the model knows, as in exact ranking
            torch.arange(N) if N <= NORMALISER_SAMPLE else torch.randperm(N, generator=g)[:NORMALISER_SAMPLE].sort()[0]
        )
        self.sample_weight = self.weight[self.sample.to(self.weight.device)].float().cpu()  # (S, d)

    def vectors(self, cols: torch.Tensor) -> torch.Tensor:
        """float32 CPU item vectors of the columns `cols` (any shape, all >= 0): (*cols.shape, d)."""
        rows = self.columns[cols.to(self.columns.device)]
        return self.weight[rows].float().cpu()

    @staticmethod
    def _keys(rows: torch.Tensor, cols: torch.Tensor, n: int) -> torch.Tensor:
        """One number per (row, column) cell, columns in [0, n); -1 (none) gets its own slot, never a column's."""
        return rows * (n + 1) + torch.where(cols < 0, n, cols)

    def search(self, h: torch.Tensor, m: int) -> torch.Tensor:
        """(B, m) long: the columns with the (approximately) largest h·w for each row of h (B, d), best first;
        -1 where the index found fewer."""
        m = min(m, self.n)
        q = h.detach().float().cpu().numpy()
        _, cols = self.faiss_index.search(np.ascontiguousarray(q), m)
        return torch.from_numpy(cols).long()

    def rank(self, ranker, prompts: Sequence[Sequence[int]], requests: Sequence, k: int):
        """`ranking.rank_batch`'s step for a ranker with this index: hidden states -> candidates -> (scores
        (b, k'), cols (b, k')) with `ranking.top_k`'s contract (best first, ties by column, -inf / -1 in places
        with nothing eligible), k' = min(k, C)."""
        from shopllm.ranking import exclude_index, next_item_hidden

        h = next_item_hidden(ranker.model, prompts, ranker.device).cpu()  # (b, d)
        rows, cols = (t.cpu() for t in exclude_index(ranker, requests))
        n_excluded = torch.bincount(rows, minlength=len(requests)) if rows.numel() else torch.zeros(len(requests))
        cand = self.search(h, k + int(n_excluded.max()))  # (b, m)
        lex = None
        searches = [r for r, req in enumerate(requests) if req.kind == "search"]
        if searches and ranker.lexical is not None and ranker.lexical_weight:
            lex = torch.zeros((len(requests), self.n), dtype=torch.float32)
            lex[searches] = ranker.lexical.scores([requests[r].query for r in searches]).float()
            extra = torch.full((len(requests), min(k, self.n)), -1, dtype=torch.long)
            extra[searches] = torch.topk(lex[searches], extra.size(1), dim=1).indices
            cand = torch.cat([cand, extra], dim=1)
        return self.score_candidates(h, cand, k, (rows, cols), lex, ranker.lexical_weight)

    def score_candidates(self, h, cand, k, exclude=None, lexical=None, lexical_weight: float = 0.0):
        """Exact scores of the candidate columns cand (b, m) (-1 = none, repeats allowed) for hidden states h
        (b, d), and their top k: (scores, cols) as `ranking.top_k` returns them. See the module docstring for
        what the scores are. exclude: the (rows, cols) pair of `ranking.exclude_index`; lexical: (b, C) BM25
        added times `lexical_weight`."""
        from shopllm.ranking import NEG_INF, top_k

        b = h.size(0)
        cand = cand.sort(dim=1).values  # column order: top_k then breaks ties by column, as exact ranking does
        dup = torch.zeros_like(cand, dtype=torch.bool)
        dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
        cand = cand.masked_fill(dup, -1)
        valid = cand >= 0
        safe = cand.clamp(min=0)
        logits = torch.einsum("bmd,bd->bm", self.vectors(safe), h).masked_fill(~valid, NEG_INF)  # (b, m)
        scores = logits - self.normaliser(h, cand, logits).unsqueeze(1)
        if lexical is not None and lexical_weight:
            scores = scores + lexical_weight * lexical.gather(1, safe)
        if exclude is not None and exclude[0].numel():
            rows, cols = exclude
            hit = torch.isin(self._keys(torch.arange(b).unsqueeze(1), cand, self.n), self._keys(rows, cols, self.n))
            scores = scores.masked_fill(hit, NEG_INF)
        scores = scores.masked_fill(~valid, NEG_INF)
        top, pos = top_k(scores, k)
        ids = cand.gather(1, pos.clamp(min=0)).masked_fill(pos < 0, -1)
        return top, ids

    def normaliser(self, h, cand, logits) -> torch.Tensor:
        """(b,) log of the row's softmax normaliser: exact over its candidates, the other items' mass
        estimated from the fixed sample (exact when the sample is the whole item table). Like exact ranking's
        log-softmax it runs over every item the model knows (`weight`'s N rows), not just the catalog."""
        head = torch.logsumexp(logits, dim=1)  # (b,)
        s_logits = h @ self.sample_weight.t()  # (b, S)
        row = torch.arange(h.size(0)).unsqueeze(1)
        cand_rows = torch.where(cand >= 0, self.columns.cpu()[cand.clamp(min=0)], -1)  # (b, m) rows of `weight`
        n = self.n_rows
        # (b, S): sampled items already counted among the candidates (the sample is sorted: a binary search)
        at = torch.searchsorted(self.sample, cand_rows).clamp(max=len(self.sample) - 1)  # (b, m)
        hit = (self.sample[at] == cand_rows) & (cand_rows >= 0)
        in_cand = torch.zeros_like(s_logits, dtype=torch.bool)
        in_cand[row.expand_as(at)[hit], at[hit]] = True
        n_rest = n - (cand >= 0).sum(1)  # (b,) items not retrieved
        n_sampled = (~in_cand).sum(1)  # (b,) of them in the sample
        tail = torch.logsumexp(s_logits.masked_fill(in_cand, float("-inf")), dim=1)
        tail = tail + torch.log(n_rest.float()) - torch.log(n_sampled.clamp(min=1).float())
        tail = tail.masked_fill((n_rest == 0) | (n_sampled == 0), float("-inf"))
        return torch.logaddexp(head, tail)


def build_index(model, col_tokens: torch.Tensor, ann: AnnSettings) -> ItemIndex:
    """The index over the catalog's columns: row c = the output item vector of column c's item (what
    `GPT.item_logits` multiplies the hidden state by)."""
    with torch.no_grad():
        weight = model.item_weight()
    return ItemIndex(weight, ann.kind, columns=col_tokens, nprobe=ann.nprobe, ef=ann.ef, seed=ann.seed)

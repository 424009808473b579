"""The words of a search: BM25 over the catalog's item text, blended into the model's query scores.

The model ranks a search by what clicks taught it; a query that names an item's words (a brand, a value,
a category) but was never searched before is answered better by the words themselves. So the query
scope's score of an item is

    log p_model(item | query) + lexical_weight * bm25(query, item) / max over the catalog of bm25(query, ·)

where the BM25 part lies in [0, 1] per query (0 for every item when no query word is in the catalog, which
leaves the model's ranking as it is). `lexical_weight` (in nats) is fitted after training on the valid
split's searches (`fit_weight`) and stored with the model; 0 turns the blend off.

Terms: lowercased Latin/digit words, and for each Chinese run its characters and character bigrams (the
usual way to index Chinese without a segmenter), after NFKC. BM25 is Lucene's (k1 = 1.5, b = 0.75), over
each item's title, category path, brand and attribute keys and values.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence

import torch

LATIN = re.compile(r"[a-z0-9]+(?:[.'\-][a-z0-9]+)*")
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
K1, B = 1.5, 0.75
WEIGHTS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # the lexical weights fit_weight tries


def terms(text: str | None) -> list[str]:
    """BM25 terms: Latin and digit words, and each Chinese run's characters and character bigrams."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    out = LATIN.findall(text)
    for run in CJK.findall(text):
        out += list(run) + [run[i : i + 2] for i in range(len(run) - 1)]
    return out


def item_text(item: Mapping) -> str:
    """What an item is found by: title, category path, brand, attribute keys and values."""
    attributes = item.get("attributes") or ()
    pairs = attributes.items() if isinstance(attributes, Mapping) else attributes
    attrs = " ".join(f"{k} {v}" for k, v in sorted(pairs) if k and v)
    return " ".join(filter(None, [item.get("title"), item.get("category"), item.get("brand"), attrs]))


class LexicalIndex:
    """BM25 over a fixed list of documents (the ranker's catalog columns, in their order)."""

    def __init__(self, docs: Sequence[str]):
        self.vocab: dict[str, int] = {}
        crow, cols, tfs, lengths = [0], [], [], []
        for doc in docs:
            counts = Counter(self.vocab.setdefault(t, len(self.vocab)) for t in terms(doc))
            cols += counts.keys()
            tfs += counts.values()
            crow.append(len(cols))
            lengths.append(sum(counts.values()))
        n, v = len(docs), max(len(self.vocab), 1)
        cols_t = torch.tensor(cols, dtype=torch.long)
        tf = torch.tensor(tfs, dtype=torch.float32)
        df = torch.bincount(cols_t, minlength=v).float()
        idf = torch.log1p((n - df + 0.5) / (df + 0.5))
        length = torch.tensor(lengths, dtype=torch.float32)
        avg = float(length.mean()) if n else 1.0
        doc_of = torch.repeat_interleave(torch.arange(n), torch.tensor(crow).diff())
        norm = K1 * (1 - B + B * length[doc_of] / max(avg, 1e-9))
        weight = idf[cols_t] * tf * (K1 + 1) / (tf + norm)
        self.n_docs = n
        # (docs, terms): a query's scores are the matrix times its term counts
        self.matrix = torch.sparse_coo_tensor(
            torch.stack([doc_of, cols_t]), weight, (n, v), check_invariants=False
        ).coalesce()

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        """(B, docs) BM25 of each query, divided by its best document's (so in [0, 1]; 0 with no match)."""
        q = torch.zeros((len(queries), self.matrix.size(1)), dtype=torch.float32)
        for r, query in enumerate(queries):
            for t in terms(query):
                if t in self.vocab:
                    q[r, self.vocab[t]] += 1.0
        raw = torch.sparse.mm(self.matrix, q.t()).t() if self.n_docs else torch.zeros((len(queries), 0))
        best = raw.max(dim=1, keepdim=True).values if self.n_docs else torch.ones((len(queries), 1))
        return raw / best.clamp(min=1e-9)


def lexical_weight(model_config: dict) -> float:
    """The blend's weight a model was saved with (config.json's rank.lexical_weight; 0: the model alone)."""
    return float((model_config.get("rank") or {}).get("lexical_weight") or 0.0)


def blend(logp: torch.Tensor, lexical: torch.Tensor, weight: float) -> torch.Tensor:
    """The query scope's score: the model's log-probabilities plus `weight` times the normalised BM25."""
    return logp if weight == 0 else logp + weight * lexical.to(logp.device)


def blend_ranks(logp: torch.Tensor, lexical: torch.Tensor, targets: torch.Tensor) -> dict[float, torch.Tensor]:
    """The targets' 1-based ranks under the blend at each weight of WEIGHTS. logp, lexical (B, C); targets
    (B,) their columns. Call it chunk by chunk of searches: a (B, C) blend at 100k items is 400 MB a row block."""
    from shopllm import metrics

    return {w: metrics.target_ranks(blend(logp, lexical, w), targets) for w in WEIGHTS}


def best_weight(ranks_by_weight: dict[float, torch.Tensor], k: int = 10) -> tuple[float, dict]:
    """The weight with the best ndcg@k (the smaller on a tie) and each weight's ndcg@k."""
    from shopllm import metrics

    by_weight = {w: metrics.metrics_from_ranks(r, ks=(k,))[f"ndcg@{k}"] for w, r in ranks_by_weight.items()}
    best = max(by_weight, key=lambda w: (round(by_weight[w], 6), -w))
    return best, {str(w): round(v, 4) for w, v in by_weight.items()}


def fit_weight(logp: torch.Tensor, lexical: torch.Tensor, targets: torch.Tensor, k: int = 10) -> tuple[float, dict]:
    """The weight of WEIGHTS with the best ndcg@k of the blend on held-out searches (the smaller on a tie),
    and each weight's ndcg@k. logp, lexical (B, C); targets (B,) their columns."""
    return best_weight(blend_ranks(logp, lexical, targets), k)

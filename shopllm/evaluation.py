"""The evaluate stage: ranking metrics per scope and description quality, from the test split and the scores.

How each number is made (so it can be read without the code):

- user scope: the published user recommendations were ranked from each user's full history, which
  includes the held-out test item, so they are not used. Each test history row is ranked again from
  its own `input_ids` (the history before the target) with the same model and the same ranking code
  as `shopllm score` (today's catalog only), the subject's earlier items masked (`history_ids`) but the
  target never masked.
- query scope: every held-out search row ranked from its prompt the same way (no mask). Where a held-out
  query also has published query-scope recommendations (it was searched often enough), `query_published`
  reports hits in those top-K lists (mrr there is mrr@K).
- session scope: each session of the date with at least two known items (consecutive repeats collapsed)
  is ranked from all but its last item, which is the target; items seen earlier in the session are masked
  as when scoring. Sessions whose last item was already seen earlier are left out (scoring masks seen
  items, so such a target could never be recommended) and counted.
- A target that is not in today's catalog cannot be recommended; it counts as a miss (rank C + 1).
- ranks are full (every catalog item is a candidate), ties counted pessimistically (shopllm.metrics).
- each scope ranks a fixed sample of at most `[evaluate] max_prompts` of its cases (`n`; `sampled_from`
  is how many there were), the same ones on a rerun, so evaluation costs the same however many users a
  shop has; at 10,000 a figure's sampling error is about ±0.003.
- descriptions: perplexity of the model on the held-out describe items' description tokens (the part
  after `<desc>`, `<eos>` included); for every description generated that night, per language, the share
  published as generated (not the fallback), the fallback reasons, and the faithfulness error rates
  (shopllm.faithfulness) of the model's text before the gate and of the published text after it, coverage
  of what the shop's descriptions usually name, distinct-2 and repeated 4-grams of the published
  generated texts; ten random published texts beside their attributes.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import torch

from shopllm import metrics, modelstore, storage
from shopllm.describe import attribute_pairs
from shopllm.errors import ShopllmError
from shopllm.faithfulness import ERROR_KINDS, Item, Lexicon, check
from shopllm.lexical import best_weight, blend_ranks, item_text, lexical_weight
from shopllm.ranking import Ranker, RankRequest, catalog_logprobs, collapse_repeats, day_bounds, exclude_mask
from shopllm.schemas import CURATED_ITEMS, CURATED_SESSIONS, DESCRIPTIONS, RECOMMENDATIONS, TOKENS, TOKENS_SCHEMA
from shopllm.text_metrics import distinct_n, repeated_ngram_rate_all
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import DESC_ID, EOS_ID, PAD_ID

K = 10


def _read(out, dataset, date, schema=None, columns=None) -> pa.Table:
    try:
        return storage.read_partition(out, dataset, date, schema, columns)
    except FileNotFoundError as e:
        raise ShopllmError(str(e)) from None


def _rows(table: pa.Table, column: str, value: str) -> list[dict]:
    """The rows whose `column` equals `value`, as dicts (filtered in Arrow first: only those become dicts)."""
    return table.filter(pc.equal(table[column], value)).to_pylist()


def _fit(ids: Sequence[int], block_size: int) -> list[int]:
    """A prompt cut to block_size, keeping its first two tokens (<bos> <hist>|<query>) and its end."""
    ids = list(ids)
    if ids and ids[-1] == EOS_ID:
        ids = ids[:-1]
    return ids if len(ids) <= block_size else ids[:2] + ids[-(block_size - 2) :]


def fixed_sample(cases: Sequence, n: int, seed: int | str) -> Sequence:
    """At most n of `cases`, in their order: the same ones for the same seed and cases (all when n is 0 or
    there are no more), so ranking a scope costs the same at any shop size."""
    if not n or len(cases) <= n:
        return cases
    return [cases[i] for i in sorted(random.Random(seed).sample(range(len(cases)), n))]


def ranks_of(
    ranker: Ranker,
    prompts: list[list[int]],
    targets: list[str],
    excludes: list[tuple[str, ...]],
    batch_size: int = 256,
    queries: list[str] | None = None,
) -> list[int]:
    """1-based rank of each target item among today's catalog (C + 1 when the target is not in it). With
    `queries` (search prompts' texts) the query scope's scores, blended as the score stage does."""
    C = len(ranker.col_items)
    out: list[int] = []
    for start in range(0, len(prompts), batch_size):
        sl = slice(start, start + batch_size)
        logp = catalog_logprobs(ranker, prompts[sl])  # (b, C)
        if queries is not None:
            logp = ranker.query_scores(logp, queries[sl])
        reqs = [RankRequest("history", exclude=e) for e in excludes[sl]]
        mask = exclude_mask(ranker, reqs)
        cols = [ranker.col_index.get(t, -1) for t in targets[sl]]
        known = torch.tensor([max(c, 0) for c in cols], device=logp.device)
        r = metrics.target_ranks(logp, known, mask).cpu().tolist()
        out.extend(rank if c >= 0 else C + 1 for rank, c in zip(r, cols))
    return out


def summarize_ranks(ranks: list[int], **extra) -> dict:
    if not ranks:
        return {"n": 0, **extra}
    m = metrics.metrics_from_ranks(torch.tensor(ranks), ks=(K,))
    return {"n": len(ranks), f"hr@{K}": m[f"hr@{K}"], f"ndcg@{K}": m[f"ndcg@{K}"], "mrr": m["mrr"], **extra}


def user_and_query_scopes(ranker: Ranker, test: pa.Table, batch_size: int, max_prompts: int = 0) -> dict:
    out = {}
    n_text = ranker.n_text
    for kind, scope in (("history", "user"), ("search", "query")):
        every = [r for r in _rows(test, "kind", kind) if r["target_item"]]
        rows = fixed_sample(every, max_prompts, scope)
        prompts = [_fit(r["input_ids"], ranker.block_size) for r in rows]
        targets = [r["target_item"] for r in rows]
        excludes = [
            tuple(ranker.items.item_of(t, n_text) for t in (r["history_ids"] or []) if t >= n_text)
            if kind == "history"
            else ()
            for r in rows
        ]
        queries = [r["subject_id"] for r in rows] if kind == "search" else None
        ranks = ranks_of(ranker, prompts, targets, excludes, batch_size, queries)
        C = len(ranker.col_items)
        out[scope] = summarize_ranks(
            ranks, target_not_in_catalog=sum(r == C + 1 for r in ranks), sampled_from=len(every)
        )
    return out


@torch.no_grad()
def fit_query_blend(ranker: Ranker, rows: list[dict], batch_size: int = 256) -> dict | None:
    """The query blend's weight fitted on held-out search rows (tokens rows: input_ids, subject_id = the
    query, target_item), by ndcg@10 over the ranker's catalog; None when no row's target is in it. The
    ranker must have the catalog's texts."""
    rows = [r for r in rows if r["kind"] == "search" and r["target_item"] in ranker.col_index]
    if not rows or ranker.lexical is None:
        return None
    ranks: dict[float, list[torch.Tensor]] = {}
    for start in range(0, len(rows), batch_size):  # chunk by chunk: never every search over every item at once
        chunk = rows[start : start + batch_size]
        logp = catalog_logprobs(ranker, [_fit(r["input_ids"], ranker.block_size) for r in chunk]).cpu()
        lexical = ranker.lexical.scores([r["subject_id"] for r in chunk])
        targets = torch.tensor([ranker.col_index[r["target_item"]] for r in chunk])
        for w, r in blend_ranks(logp, lexical, targets).items():
            ranks.setdefault(w, []).append(r)
    weight, by_weight = best_weight({w: torch.cat(r) for w, r in ranks.items()}, K)
    return {"lexical_weight": weight, f"valid_ndcg@{K}_by_weight": by_weight, "valid_searches": len(rows)}


def session_cases(sessions: pa.Table, date: str, known) -> tuple[list[tuple[list[str], str]], int]:
    """(items before the last, last item) of each session of the date, and how many had a repeated last item."""
    start, end = day_bounds(date)
    cases, repeated = [], 0
    for s in sessions.to_pylist():
        if not (s["start_ts"] < end and s["end_ts"] >= start):
            continue
        items = collapse_repeats(i for i in (s["item_ids"] or []) if i is not None and i in known)
        if len(items) < 2:
            continue
        *before, last = items
        if last in before:
            repeated += 1
        else:
            cases.append((before, last))
    return cases, repeated


def session_scope(ranker: Ranker, sessions: pa.Table, date: str, batch_size: int, max_prompts: int = 0) -> dict:
    every, repeated = session_cases(sessions, date, ranker.items)
    cases = fixed_sample(every, max_prompts, "session")
    prompts = [ranker.prompt(RankRequest("history", items=tuple(b)))[0] for b, _ in cases]
    ranks = ranks_of(ranker, prompts, [t for _, t in cases], [tuple(b) for b, _ in cases], batch_size)
    return summarize_ranks(ranks, left_out_last_item_seen_before=repeated, sampled_from=len(every))


def published_query_hits(recs: pa.Table, test: pa.Table) -> dict:
    """Hits of the held-out search targets in the published query-scope top-K lists."""
    lists: dict[str, list[str]] = {}
    for r in sorted(_rows(recs, "scope", "query"), key=lambda r: (r["subject_id"], r["rank"])):
        lists.setdefault(r["subject_id"], []).append(r["item_id"])
    rows = [r for r in _rows(test, "kind", "search") if r["target_item"] and r["subject_id"] in lists]
    if not rows:
        return {"n": 0}
    ranks = [
        lists[r["subject_id"]].index(r["target_item"]) + 1 if r["target_item"] in lists[r["subject_id"]] else math.inf
        for r in rows
    ]
    hits = [rk <= K for rk in ranks]
    return {
        "n": len(rows),
        f"hr@{K}": sum(hits) / len(rows),
        f"ndcg@{K}": sum(1 / math.log2(rk + 1) for rk in ranks if rk <= K) / len(rows),
        "mrr@top_k": sum(1 / rk for rk in ranks) / len(rows),
    }


@torch.no_grad()
def description_perplexity(model, sequences: list[list[int]], batch_size: int = 64, device="cpu") -> float | None:
    """exp(mean cross-entropy) over the tokens after <desc> (the description and its <eos>)."""
    batches = []
    block = model.config.block_size
    for start in range(0, len(sequences), batch_size):
        chunk = [s[: block + 1] for s in sequences[start : start + batch_size] if DESC_ID in s]
        if not chunk:
            continue
        T = max(len(s) for s in chunk) - 1
        idx = torch.full((len(chunk), T), PAD_ID, dtype=torch.long)
        tgt = torch.full((len(chunk), T), -1, dtype=torch.long)
        for r, s in enumerate(chunk):
            idx[r, : len(s) - 1] = torch.tensor(s[:-1])
            d = s.index(DESC_ID)
            tgt[r, d : len(s) - 1] = torch.tensor(s[d + 1 :])  # predict every token after <desc>
        batches.append((idx.to(device), tgt.to(device)))
    if not any(int((t >= 0).sum()) for _, t in batches):
        return None
    return metrics.perplexity(model, batches)


def text_rates(texts: Sequence[str | None], items: Sequence[Item], lexicon: Lexicon) -> dict:
    """Share of the texts with each faithfulness error, and their mean coverage (None-texts skipped)."""
    found = [check(t, it, lexicon) for t, it in zip(texts, items) if t is not None]
    if not found:
        return {"n": 0}
    coverage = [c for f in found if (c := f.coverage) is not None]
    return {
        "n": len(found),
        **{f"{k}_rate": sum(f.has(k) for f in found) / len(found) for k in ERROR_KINDS},
        "any_blocking_rate": sum(bool(f.blocking) for f in found) / len(found),
        "coverage": statistics.fmean(coverage) if coverage else None,
    }


def language_quality(rows: list[dict], items: dict[str, Item], lexicon: Lexicon) -> dict:
    """The description figures of one language's rows of the night (see description_quality)."""
    generated = [r for r in rows if not r["is_fallback"]]
    reasons: dict[str, int] = {}
    for r in rows:
        if r["is_fallback"]:
            reasons[r.get("fallback_reason") or "unknown"] = reasons.get(r.get("fallback_reason") or "unknown", 0) + 1
    published = [r["description"] for r in generated]
    return {
        "items": len(rows),
        "published_generated_share": len(generated) / len(rows) if rows else None,
        "fallback_reasons": dict(sorted(reasons.items())),
        "before_gate": text_rates([r.get("model_text") for r in rows], [items[r["item_id"]] for r in rows], lexicon),
        "after_gate": text_rates([r["description"] for r in rows], [items[r["item_id"]] for r in rows], lexicon),
        "distinct-2": distinct_n(published, 2) if published else None,
        "repeated_4gram_rate": repeated_ngram_rate_all(published, 4) if published else None,
    }


def description_quality(descriptions: pa.Table, items: pa.Table, date: str | None = None) -> dict:
    """Faithfulness of the descriptions generated on `date` (all rows when None), per language and in all,
    before the gate (the model's text) and after it (what is published), plus ten random published
    generated texts beside their attributes, and the share of the whole catalog's published descriptions
    (tonight's and carried over) that are the model's. The lexicon is the catalog's, calibrated on its
    descriptions."""
    item_rows = {r["item_id"]: r for r in items.to_pylist()}
    lexicon = Lexicon.from_items(item_rows.values())
    every = [r for r in descriptions.to_pylist() if r["item_id"] in item_rows]
    rows = [r for r in every if date is None or r.get("generated_dt") in (None, date)]
    checked = {i: Item.of(r.get("brand"), r.get("attributes"), r.get("title")) for i, r in item_rows.items()}
    out = {
        "catalog_model_share": sum(not r["is_fallback"] for r in every) / len(every) if every else None,
        "all": language_quality(rows, checked, lexicon),
    }
    for lang in sorted({r["language"] for r in rows}):
        out[lang] = language_quality([r for r in rows if r["language"] == lang], checked, lexicon)
    published = sorted((r for r in rows if not r["is_fallback"]), key=lambda r: r["item_id"])
    pick = random.Random(date or "").sample(published, min(10, len(published)))
    out["examples"] = [
        {
            "item_id": r["item_id"],
            "language": r["language"],
            "title": item_rows[r["item_id"]]["title"],
            "attributes": "; ".join(f"{k}: {v}" for k, v in attribute_pairs(item_rows[r["item_id"]]["attributes"])),
            "brand": item_rows[r["item_id"]].get("brand"),
            "description": r["description"],
            "flags": ", ".join(r.get("flags") or []) or "none",
        }
        for r in sorted(pick, key=lambda r: r["item_id"])
    ]
    return out


def heldout_perplexity(test: pa.Table, model, device) -> dict:
    held = _rows(test, "kind", "describe")
    return {
        "heldout_items": len(held),
        "perplexity": description_perplexity(model, [r["input_ids"] for r in held], device=device),
    }


def evaluate(
    out: str, date: str, *, version: str | None = None, device: str = "cpu", batch_size: int = 256, max_prompts: int = 0
) -> dict:
    """Every metric of the evaluate stage for one date (see the module docstring for the method); each
    ranking scope over a fixed sample of at most `max_prompts` test prompts (0: all)."""
    recs = _read(out, RECOMMENDATIONS, date, columns=["model_version", "scope", "subject_id", "rank", "item_id"])
    test = _read(out, f"{TOKENS}/test", date, TOKENS_SCHEMA)
    items = _read(out, CURATED_ITEMS, date)
    sessions = _read(out, CURATED_SESSIONS, date)
    descriptions = _read(out, DESCRIPTIONS, date)
    if version is None:
        published = sorted(pc.unique(recs["model_version"]).to_pylist()) if recs.num_rows else []
        version = published[-1] if published else modelstore.latest_version(out)
    if not version or not modelstore.exists(out, version):
        raise ShopllmError(f"no model {version or '(none published)'} under {modelstore.models_root(out)}")
    loaded = modelstore.load(out, version, device)
    weight = lexical_weight(loaded.config)
    ranker = Ranker(
        loaded.model,
        TextTokenizer.load(loaded.tokenizer_path),
        loaded.items,
        items.column("item_id").to_pylist(),
        device,
        item_texts={r["item_id"]: item_text(r) for r in items.to_pylist()} if weight else None,
        lexical_weight=weight,
    )
    ranking = user_and_query_scopes(ranker, test, batch_size, max_prompts)
    ranking["session"] = session_scope(ranker, sessions, date, batch_size, max_prompts)
    ranking["query_published"] = published_query_hits(recs, test)
    return {
        "date": date,
        "model_version": version,
        "catalog_items": len(ranker.col_items),
        "query_lexical_weight": weight,
        "ranking": {s: ranking[s] for s in ("user", "session", "query", "query_published")},
        "descriptions": {
            **heldout_perplexity(test, loaded.model, device),
            **description_quality(descriptions, items, date),
        },
    }

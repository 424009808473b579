"""shopllm score: ranked recommendations and generated descriptions for one date (Beam RunInference)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from shopllm import config as config_mod
from shopllm import modelstore, storage
from shopllm.ann import require_faiss
from shopllm.ann import settings as ann_settings
from shopllm.config import ScoreConfig
from shopllm.devices import resolve_device
from shopllm.errors import ShopllmError
from shopllm.faithfulness import Lexicon
from shopllm.lexical import item_text, lexical_weight
from shopllm.schemas import CURATED_EVENTS, CURATED_ITEMS, CURATED_SESSIONS, DESCRIPTIONS, RECOMMENDATIONS, SCOPES


def add_arguments(p):
    from jobs.cli import add_common

    add_common(p)
    p.add_argument("--model", help="model version (default: the one trained for --date, else models/LATEST)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where the model runs (default cpu)")
    p.add_argument("--top-k", type=int, help="recommendations per subject (default 20)")
    p.add_argument("--active-days", type=int, help="score users with an event in the last N days (default 30)")
    p.add_argument("--min-query-count", type=int, help="score queries searched at least M times (default 3)")
    p.add_argument("--batch-size", type=int, help="RunInference batch size (default 256)")
    p.add_argument("--max-new-tokens", type=int, help="longest generated description, in tokens (default 96)")
    p.add_argument("--temperature", type=float, help="0 = greedy (default); > 0 samples with --seed")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass when --temperature > 0 (default 1.0)")
    p.add_argument("--seed", type=int, help="sampling seed (default 0)")


def resolve_version(out: str, date: str, requested: str | None) -> str:
    """--model, else the version trained for the date, else LATEST."""
    if requested:
        if not modelstore.exists(out, requested):
            raise ShopllmError(f"no model {requested} under {modelstore.models_root(out)}")
        return requested
    for version in (modelstore.version_for(date), modelstore.latest_version(out)):
        if version and modelstore.exists(out, version):
            return version
    raise ShopllmError(f"no trained model under {modelstore.models_root(out)}; run 'shopllm train' first")


def score_config(args):
    cfg = config_mod.load(args.config).score
    cfg = config_mod.replace(
        cfg,
        device=args.device,
        top_k=args.top_k,
        active_days=args.active_days,
        min_query_count=args.min_query_count,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    resolve_device(cfg.device)
    return cfg


def print_summary(s: dict) -> None:
    print(f"score {s['date']} with model {s['model_version']} ({s['seconds']} s)")
    for scope, r in s["recommendations"].items():
        skipped = ", ".join(f"{k} {v}" for k, v in r["skipped"].items()) or "none"
        print(
            f"  {scope:8s} scored {r['scored']:>7d}   skipped: {skipped}   short of top-{s['top_k']}: {r['short_of_k']}"
        )
    d = s["descriptions"]
    print(f"  descriptions generated {d['generated']}, carried over {d['carried_over']}, fallbacks {d['fallbacks']}")


def run(args, beam_args):
    cfg = score_config(args)
    storage.check_writable(args.out)  # S3 that cannot be reached fails here, in one line
    version = resolve_version(args.out, args.date, args.model)
    summary = run_score(args.out, args.date, version, cfg, beam_args)
    print_summary(summary)
    return 0


def find_inputs(out: str, date: str):
    """The night's curated files and the newest earlier descriptions partition (a ScoreInputs)."""
    from pipelines.score import ScoreInputs

    try:
        items = storage.partition_files(out, CURATED_ITEMS, date)
        events = storage.partition_files(out, CURATED_EVENTS, date)
        sessions = storage.partition_files(out, CURATED_SESSIONS, date)
    except FileNotFoundError as e:
        raise ShopllmError(f"{e}") from None
    earlier = [d for d in storage.published_dates(out, DESCRIPTIONS) if d < date]
    prev = earlier[-1] if earlier else None
    prev_files = storage.partition_files(out, DESCRIPTIONS, prev) if prev else []
    return ScoreInputs(items, events, sessions, prev_files, prev)


CATALOG_COLUMNS = ["item_id", "title", "category", "brand", "attributes", "description"]


def catalog_rows(files: list[str]) -> list[dict]:
    """The night's catalog items, read once for the catalog ids, the search texts and the lexicon."""
    table = storage.read_columns(files, CATALOG_COLUMNS)
    return table.to_pylist() if table is not None else []


def catalog_item_ids(rows: list[dict]) -> list[str]:
    return sorted({r["item_id"] for r in rows} - {None})


def catalog_texts(rows: list[dict]) -> dict[str, str]:
    """item_id -> the text searches find it by (shopllm.lexical.item_text)."""
    return {r["item_id"]: item_text(r) for r in rows if r["item_id"] is not None}


def catalog_lexicon(rows: list[dict]) -> Lexicon:
    """The shop's values, brands and keys, calibrated on its own descriptions (what the gate checks against;
    the titles give the items' model names)."""
    return Lexicon.from_items(rows) if rows else Lexicon({}, ())


def summarize(
    counters: dict[str, int],
    *,
    date,
    version,
    cfg: ScoreConfig,
    catalog: list[str],
    model_items: set[str],
    previous_date,
    seconds: float,
) -> dict:
    def scope_summary(scope):
        skipped = {k[len(f"{scope}_skipped_") :]: v for k, v in counters.items() if k.startswith(f"{scope}_skipped_")}
        return {
            "scored": counters.get(f"{scope}_scored", 0),
            "skipped": dict(sorted(skipped.items())),
            "short_of_k": counters.get(f"{scope}_short_of_k", 0),
            "unknown_history_items": counters.get(f"{scope}_unknown_history_items", 0),
        }

    reasons = {
        k[len("descriptions_fallback_") :]: v for k, v in counters.items() if k.startswith("descriptions_fallback_")
    }
    flags = {k[len("descriptions_flag_") :]: v for k, v in counters.items() if k.startswith("descriptions_flag_")}
    return {
        "date": date,
        "model_version": version,
        "top_k": cfg.top_k,
        "active_days": cfg.active_days,
        "min_query_count": cfg.min_query_count,
        "device": cfg.device,
        "catalog_items": len(catalog),
        "catalog_items_unknown_to_model": sum(1 for i in catalog if i not in model_items),
        "recommendations": {s: scope_summary(s) for s in SCOPES},
        "descriptions": {
            "previous_partition": previous_date,
            "generated": counters.get("descriptions_generated", 0),
            "carried_over": counters.get("descriptions_carried_over", 0),
            "fallbacks": counters.get("descriptions_fallbacks", 0),
            "fallback_reasons_new": dict(sorted(reasons.items())),
            "model_text_flags_new": dict(sorted(flags.items())),
        },
        "seconds": round(seconds, 2),
    }


def run_score(out: str, date: str, version: str, cfg: ScoreConfig, beam_args: Sequence[str] = ()) -> dict:
    """Run the pipeline, publish both partitions, move models/LATEST, write the summary; return it."""
    from pipelines import score as score_pipeline
    from pipelines.common import counter_values, make_pipeline, run_stage_pipeline
    from shopllm.schemas import DESCRIPTIONS_SCHEMA, RECOMMENDATIONS_SCHEMA

    out = os.fspath(out)
    storage.check_writable(out)
    if not modelstore.exists(out, version):
        raise ShopllmError(f"no model {version} under {modelstore.models_root(out)}; run 'shopllm train' first")
    inputs = find_inputs(out, date)
    items = catalog_rows(inputs.items)
    catalog = catalog_item_ids(items)
    model_dir = modelstore.model_dir(out, version)
    from shopllm.vocab import ItemVocab

    model_items = set(ItemVocab.load(model_dir).items)
    ann = ann_settings(cfg)
    if ann is not None and ann.wanted(sum(1 for i in catalog if i in model_items)):
        require_faiss()  # here, in one line, rather than in every worker once the pipeline runs
    t0 = time.perf_counter()
    outputs = {RECOMMENDATIONS: RECOMMENDATIONS_SCHEMA, DESCRIPTIONS: DESCRIPTIONS_SCHEMA}
    with storage.publishing_together(out, date, outputs) as folders:
        p = make_pipeline(beam_args)
        _ = p | "Score" >> score_pipeline.Score(
            inputs,
            model_dir=str(model_dir),
            version=version,
            date=date,
            cfg=cfg,
            catalog=catalog,
            rec_dir=str(folders[RECOMMENDATIONS]),
            desc_dir=str(folders[DESCRIPTIONS]),
            lexicon=catalog_lexicon(items),
            item_texts=catalog_texts(items) if lexical_weight(modelstore.load_config(model_dir)) else None,
        )
        result = run_stage_pipeline(p, "score")
    modelstore.set_latest(out, version)
    summary = summarize(
        counter_values(result, score_pipeline.NAMESPACE),
        date=date,
        version=version,
        cfg=cfg,
        catalog=catalog,
        model_items=model_items,
        previous_date=inputs.previous_date,
        seconds=time.perf_counter() - t0,
    )
    storage.write_json(storage.summary_path(out, date, "score"), summary)
    return summary

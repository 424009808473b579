"""shopllm score: ranked recommendations and generated descriptions for one date (Beam RunInference)."""
from __future__ import annotations

from shopllm import config as config_mod
from shopllm import modelstore
from shopllm.errors import ShopllmError


def add_arguments(p):
    from jobs.cli import add_common

    add_common(p)
    p.add_argument("--model", help="model version (default: the one trained for --date, else models/LATEST)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where the model runs (default cpu)")
    p.add_argument("--top-k", type=int, help="recommendations per subject (default 20)")
    p.add_argument("--active-days", type=int, help="score users with an event in the last N days (default 30)")
    p.add_argument("--min-query-count", type=int, help="score queries searched at least M times (default 3)")
    p.add_argument("--batch-size", type=int, help="RunInference batch size (default 64)")
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
    cfg = config_mod.replace(cfg, device=args.device, top_k=args.top_k, active_days=args.active_days,
                             min_query_count=args.min_query_count, batch_size=args.batch_size,
                             max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                             top_p=args.top_p, seed=args.seed)
    for name in ("top_k", "active_days", "min_query_count", "batch_size", "max_new_tokens"):
        if getattr(cfg, name) < 1:
            raise ShopllmError(f"score.{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.temperature < 0 or not 0 < cfg.top_p <= 1:
        raise ShopllmError(f"need temperature >= 0 and 0 < top_p <= 1, got {cfg.temperature} and {cfg.top_p}")
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ShopllmError("--device cuda given but no CUDA device is available")
    return cfg


def print_summary(s: dict) -> None:
    print(f"score {s['date']} with model {s['model_version']} ({s['seconds']} s)")
    for scope, r in s["recommendations"].items():
        skipped = ", ".join(f"{k} {v}" for k, v in r["skipped"].items()) or "none"
        print(f"  {scope:8s} scored {r['scored']:>7d}   skipped: {skipped}   short of top-{s['top_k']}: {r['short_of_k']}")
    d = s["descriptions"]
    print(f"  descriptions generated {d['generated']}, carried over {d['carried_over']}, fallbacks {d['fallbacks']}")


def run(args, beam_args):
    from pipelines.score import run_score

    cfg = score_config(args)
    version = resolve_version(args.out, args.date, args.model)
    summary = run_score(args.out, args.date, version, cfg, beam_args)
    print_summary(summary)
    return 0

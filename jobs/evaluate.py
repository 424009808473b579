"""shopllm evaluate: hr@10 / ndcg@10 / mrr per scope and description quality -> summaries/dt=D/evaluate.json."""

from __future__ import annotations

from shopllm import config, storage
from shopllm.config import EvaluateConfig
from shopllm.devices import resolve_device
from shopllm.errors import ShopllmError


def add_arguments(p):
    from jobs.cli import add_common

    add_common(p)
    p.add_argument("--model", help="model version (default: the one on the published recommendations)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs (default cpu)")
    p.add_argument("--batch-size", type=int, default=256, help="prompts per forward pass (default 256)")


def _fmt(v):
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def print_summary(s: dict) -> None:
    print(f"evaluate {s['date']} with model {s['model_version']} ({s['catalog_items']} catalog items)")
    for scope, m in s["ranking"].items():
        print(
            f"  {scope:16s} n {m['n']:>6d}   hr@10 {_fmt(m.get('hr@10'))}   ndcg@10 {_fmt(m.get('ndcg@10'))}"
            f"   mrr {_fmt(m.get('mrr', m.get('mrr@top_k')))}"
            + (f"   (a sample of {m['sampled_from']})" if m.get("sampled_from", 0) > m["n"] else "")
        )
    d = s["descriptions"]
    print(
        f"  descriptions     held out {d['heldout_items']}   perplexity {_fmt(d['perplexity'])}   "
        f"catalog with a model description {_fmt(d.get('catalog_model_share'))}"
    )
    for lang, q in d.items():
        if not isinstance(q, dict) or "before_gate" not in q:
            continue
        before, after = q["before_gate"], q["after_gate"]
        print(
            f"    {lang:4s} items {q['items']:>5d}   published as generated {_fmt(q['published_generated_share'])}"
            f"   before the gate: contradiction {_fmt(before.get('contradiction_rate'))}, wrong brand "
            f"{_fmt(before.get('wrong_brand_rate'))}, wrong model {_fmt(before.get('wrong_model_rate'))}, misbinding "
            f"{_fmt(before.get('misbinding_rate'))}"
            f"   after: any blocking {_fmt(after.get('any_blocking_rate'))}   coverage {_fmt(after.get('coverage'))}"
            f"   distinct-2 {_fmt(q['distinct-2'])}"
        )


def run(args, beam_args):
    cfg = config.load(args.config).evaluate
    summary = run_evaluate(
        args.out, args.date, version=args.model, device=args.device, batch_size=args.batch_size, cfg=cfg
    )
    print_summary(summary)
    return 0


def run_evaluate(
    out: str,
    date: str,
    *,
    version: str | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    cfg: EvaluateConfig | None = None,
) -> dict:
    """The stage: every figure of shopllm.evaluation for `date`, written to summaries/dt=D/evaluate.json."""
    from shopllm.evaluation import evaluate

    if batch_size < 1:
        raise ShopllmError(f"--batch-size must be >= 1, got {batch_size}")
    cfg = cfg or EvaluateConfig()
    summary = evaluate(
        out, date, version=version, device=resolve_device(device), batch_size=batch_size, max_prompts=cfg.max_prompts
    )
    storage.write_json(storage.summary_path(out, date, "evaluate"), summary)
    return summary

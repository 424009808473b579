"""shopllm prepare: tokenizer, item vocabulary and tokens/{train,valid,test}/dt=D from curated/."""
from __future__ import annotations

from jobs.cli import add_common
from shopllm import config


def add_arguments(p):
    add_common(p)
    p.add_argument("--retrain-tokenizer", action="store_true", default=None,
                   help="train a new tokenizer even if vocab/tokenizer.json exists (older models' text ids become invalid)")


def run(args, beam_args) -> int:
    from pipelines.prepare import format_summary, run_prepare

    cfg = config.replace(config.load(args.config).prepare, retrain_tokenizer=args.retrain_tokenizer)
    summary = run_prepare(args.out, args.date, cfg, beam_args)
    print(format_summary(summary))
    return 0

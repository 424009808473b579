"""shopllm sample: write the embedded sample shop (catalog + 30 days of clickstream) under --out."""

from __future__ import annotations

import dataclasses

from jobs.cli import valid_date
from shopllm.errors import ShopllmError
from shopllm.sample import SampleConfig, validate, write_sample
from shopllm.storage import OutputError, check_writable

_DEFAULTS = SampleConfig()


def add_arguments(p):
    p.add_argument("--out", required=True, help="output folder: catalog/, events/, sample_manifest.json")
    p.add_argument("--items", type=int, default=_DEFAULTS.items, help="clean products (default: %(default)s)")
    p.add_argument("--users", type=int, default=_DEFAULTS.users, help="users (default: %(default)s)")
    p.add_argument(
        "--events", type=int, default=_DEFAULTS.events, help="event lines, dirty ones included (default: %(default)s)"
    )
    p.add_argument(
        "--days", type=int, default=_DEFAULTS.days, help="days of clickstream, one file per day (default: %(default)s)"
    )
    p.add_argument(
        "--end-date",
        type=valid_date,
        default=_DEFAULTS.end_date,
        help="last day, YYYY-MM-DD UTC (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="same seed, same bytes (default: %(default)s)")
    p.add_argument(
        "--dirty-rate",
        type=float,
        default=_DEFAULTS.dirty_rate,
        help="share of bad records in each feed (default: %(default)s)",
    )


def run(args, beam_args) -> int:
    cfg = SampleConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SampleConfig)})
    validate(cfg)  # before touching --out
    try:
        check_writable(args.out)
    except OutputError as e:
        raise ShopllmError(str(e)) from None
    print(summary(write_sample(args.out, cfg), args.out))
    return 0


def summary(m: dict, out: str) -> str:
    cat, ev = m["catalog"], m["events"]
    dirty = lambda d: ", ".join(f"{k} {n}" for k, n in d.items() if n)  # noqa: E731
    return "\n".join(
        [
            f"sample shop written to {out} (seed {m['config']['seed']}, "
            f"{m['window']['first_day']} .. {m['window']['last_day']})",
            f"  {cat['path']}: {cat['items']} items in {cat['categories']} categories / "
            f"{cat['sub_categories']} sub-categories, "
            f"{cat['versions']} versions ({cat['multi_version_items']} items with 2-3), {cat['records']} lines",
            f"    dirty: {dirty(cat['dirty'])}",
            f"    to clean: {dirty(cat['cleanable'])}",
            f"  events/: {len(ev['files'])} daily files, {ev['lines']} lines, {ev['users']} users, "
            f"{ev['sessions']} sessions",
            f"    by type: {dirty(ev['by_type'])}",
            f"    dirty: {dirty(ev['dirty'])}",
            f"    queries: {ev['distinct_queries']} distinct, "
            f"{ev['queries_searched_3_times_or_more']} searched 3+ times",
            "  manifest: sample_manifest.json",
        ]
    )

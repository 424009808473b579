"""shopllm ingest --catalog URI --events URI --out DIR --date D [--config F] [beam options]

Checks the inputs and --out before the pipeline starts, runs the pipeline into staging folders,
publishes the five partitions only when it succeeded, writes summaries/dt=D/ingest.json and prints
a short table. Read = kept + deduplicated + rejected for every source, or the run fails.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from jobs.cli import add_common
from pipelines import common
from pipelines import ingest as ingest_pipeline
from shopllm import config as config_mod
from shopllm import ingest, storage
from shopllm.errors import InputError, ShopllmError

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--catalog", required=True, help="catalog path or glob (.jsonl/.csv/.parquet, optionally .gz)")
    p.add_argument("--events", required=True, help="events path or glob (.jsonl/.csv/.parquet, optionally .gz)")
    add_common(p)
    p.add_argument("--batch-rows", type=int, help="records per chunk inside the pipeline")
    p.add_argument("--shards", type=int, help="key shards (= output files per dataset)")


def match_inputs(pattern: str, what: str, beam_args: Sequence[str] = ()) -> list[str]:
    """Sorted paths a glob matches; each one opened and its first byte read so an unreadable file fails now.
    Beam's filesystems get the pipeline's options first (`--s3_endpoint_url` and keys for s3:// inputs)."""
    FileSystems.set_options(common.filesystem_options(beam_args))
    check_reachable(pattern, what)
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # Beam raises BeamIOError for a missing directory or scheme
        raise InputError(f"--{what} {pattern}: {common.first_line(e)}") from None
    paths = sorted(m.path for m in matches if not m.path.endswith("/"))
    if not paths:
        raise InputError(f"--{what} {pattern} matches no file")
    for path in paths:
        fmt = ingest.file_format(path)
        try:
            with FileSystems.open(path) as f:  # decompresses .gz, so a corrupt header fails here
                if fmt == "parquet":
                    _ = pq.ParquetFile(f if f.seekable() else io.BytesIO(f.read())).schema_arrow
                else:
                    f.read(1)
        except Exception as e:
            raise InputError(f"cannot read {path}: {common.first_line(e)}") from None
    return paths


def check_reachable(pattern: str, what: str) -> None:
    """For an s3:// input, list the folder above its first wildcard through the storage layer: an endpoint
    that cannot be reached or keys that are refused fail here in a second or two with one line (Beam's own
    S3 client retries a failed listing with backoff for minutes)."""
    if storage.scheme(pattern) != "s3":
        return
    folder = storage.parent(re.split(r"[*?\[]", pattern, maxsplit=1)[0] + "x")
    try:
        storage.list_names(folder)
    except OSError as e:
        raise InputError(f"--{what} {pattern}: {common.first_line(e)}") from None


def summarize(counters: dict[str, int]) -> dict:
    """Per source {read, kept, deduplicated, rejected: {reason: n}, balanced} from the pipeline's counters."""
    out = {}
    for source in ingest.SOURCES:
        rejected = {r: counters.get(f"{source}.rejected.{r}", 0) for r in ingest.Reason.ALL}
        rejected = {r: n for r, n in rejected.items() if n}
        entry = {name: counters.get(f"{source}.{name}", 0) for name in ("read", "kept", "deduplicated")}
        entry["rejected"] = rejected
        entry["balanced"] = entry["read"] == entry["kept"] + entry["deduplicated"] + sum(rejected.values())
        out[source] = entry
    return out


def format_summary(summary: dict) -> str:
    lines = [f"{'source':<8} {'read':>10} {'kept':>10} {'dedup':>8} {'rejected':>9}"]
    for source in ingest.SOURCES:
        s = summary[source]
        lines.append(
            f"{source:<8} {s['read']:>10} {s['kept']:>10} {s['deduplicated']:>8} {sum(s['rejected'].values()):>9}"
        )
    for source in ingest.SOURCES:
        if summary[source]["rejected"]:
            reasons = ", ".join(f"{r}={n}" for r, n in sorted(summary[source]["rejected"].items()))
            lines.append(f"  {source} rejects: {reasons}")
    return "\n".join(lines)


def run(args, beam_args) -> int:
    cfg = config_mod.load(args.config)
    icfg = config_mod.replace(cfg.ingest, batch_rows=args.batch_rows, shards=args.shards)
    catalog_files = match_inputs(args.catalog, "catalog", beam_args)
    event_files = match_inputs(args.events, "events", beam_args)
    try:
        storage.check_writable(args.out)
    except storage.OutputError as e:
        raise ShopllmError(str(e)) from None

    if not getattr(args, "verbose", False):
        quiet_dofn_tracebacks()
    summary = run_ingest(catalog_files, event_files, args.out, args.date, icfg, beam_args)
    print(format_summary(summary))
    return 0


def quiet_dofn_tracebacks() -> None:
    """A failing DoFn is logged by Beam with its traceback before the error reaches us; we report it in one
    line instead (the traceback is logged at DEBUG with -v)."""
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)


def run_ingest(catalog_files: list[str], event_files: list[str], out: str, date: str, cfg, beam_args=()) -> dict:
    """Run the pipeline into staging folders and publish them; returns the summary written to ingest.json."""
    with storage.publishing_together(out, date, ingest_pipeline.DATASETS) as folders:
        pipeline = common.make_pipeline(beam_args)
        _ = pipeline | "Ingest" >> ingest_pipeline.Ingest(catalog_files, event_files, folders, cfg)
        result = common.run_stage_pipeline(pipeline, "ingest")
        counters = common.counter_values(result, ingest_pipeline.NAMESPACE)
        if not counters:
            log.warning("the runner reported no counters: ingest.json cannot show what was read and kept")
        summary = summarize(counters)
        unbalanced = [s for s in ingest.SOURCES if not summary[s]["balanced"]]
        if unbalanced:
            raise ShopllmError(f"records unaccounted for in {', '.join(unbalanced)}: {summary}; nothing published")
    summary = {"date": date, "inputs": {"catalog": catalog_files, "events": event_files}, **summary}
    storage.write_json(storage.summary_path(out, date, "ingest"), summary)
    return summary

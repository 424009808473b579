"""Pipeline construction shared by every stage."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from shopllm import storage


def make_pipeline(beam_args: Sequence[str] = (), **extra_options) -> beam.Pipeline:
    """A Pipeline on the runner named by `--runner`, else Beam's in-process FnApiRunner.

    Beam >= 2.68 defaults to the Prism runner, which downloads a binary at run time; we never want
    that offline, so the in-process runner is chosen explicitly unless the user names one. Every
    other Beam option in `beam_args` is passed through untouched.
    """
    options = PipelineOptions(list(beam_args), **extra_options)
    if options.view_as(StandardOptions).runner:
        return beam.Pipeline(options=options)
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return beam.Pipeline(runner=FnApiRunner(), options=options)


def single_worker(pipeline) -> bool:
    """True when the pipeline runs on one in-process worker (no --runner, no worker count above 1)."""
    options = pipeline.options
    direct = options.view_as(DirectOptions)
    return (
        options.view_as(StandardOptions).runner is None
        and (direct.direct_num_workers or 1) == 1
        and direct.direct_running_mode in (None, "in_memory")
    )


def use_storage(options: storage.StorageOptions | None) -> None:
    """Point this process's storage layer (pyarrow) and Beam's filesystems at `options`: called in the
    `setup()` of every DoFn that reads or writes files, so a worker in another process or on another machine
    (multi_processing, a portable runner's worker pool, Dataflow) reaches the same object storage as the
    driver, whatever its environment holds. A no-op where they are already in use (the in-process runner)."""
    if options is None or storage.options() == options:
        return
    storage.configure(options)
    from apache_beam.io.filesystems import FileSystems

    FileSystems.set_options(PipelineOptions(storage_flags(options)))


def storage_flags(options: storage.StorageOptions) -> list[str]:
    """Beam's own flags (`--s3_endpoint_url=…`) for the options that are set."""
    return [f"--{name}={value}" for name, value in dataclasses.asdict(options).items() if value]


def filesystem_options(beam_args: Sequence[str] = ()) -> PipelineOptions:
    """Pipeline options for Beam's filesystems in this process: `beam_args`, plus the storage layer's S3
    settings that they do not name (those may have come from AWS_* variables)."""
    given = {a.split("=", 1)[0] for a in beam_args if a.startswith("--")}
    extra = [f for f in storage_flags(storage.options()) if f.split("=", 1)[0] not in given]
    return PipelineOptions([*beam_args, *extra])


class StorageDoFn(beam.DoFn):
    """A DoFn that reads or writes through the storage layer: carries the driver's StorageOptions (taken when
    the pipeline is built) to wherever it runs and applies them in setup()."""

    def __init__(self):
        super().__init__()
        self.storage_options = storage.options()

    def setup(self):
        use_storage(self.storage_options)


_frozen_depth = 0


@contextlib.contextmanager
def gc_frozen():
    """Run the block with every object that exists now left out of the garbage collector's full
    collections. After the imports (Beam, pyarrow, ...) a process holds ~130k long-lived objects, and each
    full collection walks them all: ~65 ms on a 2-core machine, about once per pipeline run, stalling the
    step it lands in. gc.unfreeze() hands them back when the outermost block ends; until then, reference
    cycles that were already garbage when it started wait in memory too."""
    global _frozen_depth
    if _frozen_depth == 0:
        gc.freeze()
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        if _frozen_depth == 0:
            gc.unfreeze()


def run_pipeline(pipeline: beam.Pipeline):
    """Run to completion (see gc_frozen) and return the PipelineResult (for counters)."""
    with gc_frozen():
        result = pipeline.run()
        result.wait_until_finish()
    return result


def first_line(e: BaseException) -> str:
    """The line of an error worth showing: Beam re-raises a worker's error with the worker's traceback in the
    message, whose last line is the error itself."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[-1] if "Traceback" in text else text.splitlines()[0]


def run_stage_pipeline(pipeline: beam.Pipeline, stage: str):
    """run_pipeline, a failure (in a worker, or reaching storage) raised as one ShopllmError line; the whole
    error is logged at DEBUG (-v)."""
    from shopllm.errors import ShopllmError

    try:
        return run_pipeline(pipeline)
    except Exception as e:
        logging.getLogger(__name__).debug("%s pipeline failed", stage, exc_info=True)
        raise ShopllmError(f"{stage} pipeline failed: {first_line(e)}") from None


def counter_values(result, namespace: str) -> dict[str, int]:
    """Committed counter values of one namespace, by name (works on every runner that reports metrics)."""
    from apache_beam.metrics.metric import MetricsFilter

    out: dict[str, int] = {}
    try:
        metrics = result.metrics().query(MetricsFilter().with_namespace(namespace))
    except Exception:  # some runners report no metrics
        logging.getLogger(__name__).warning("runner reported no metrics")
        return out
    for c in metrics["counters"]:
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + (c.committed or c.attempted or 0)
    return out

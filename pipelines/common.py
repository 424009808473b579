"""Pipeline construction shared by every stage."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions


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

"""shopllm report: write reports/dt=D/report.{json,html} from the stage summaries and published outputs."""

from __future__ import annotations

import argparse

from jobs.cli import add_common


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p, config=False)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    print(f"report: {run_report(args.out, args.date)}")
    return 0


def run_report(out: str, date: str) -> str:
    """The stage: reports/dt=D/report.{json,html} from the night's summaries; returns where report.html is."""
    from shopllm.report import write_report

    return write_report(out, date)

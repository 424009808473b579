"""shopllm report: write reports/dt=D/report.{json,html} from the stage summaries and published outputs."""
from __future__ import annotations

import argparse

from jobs.cli import add_common


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p, config=False)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from shopllm.report import write_report

    folder = write_report(args.out, args.date)
    print(f"report: {folder / 'report.html'}")
    return 0

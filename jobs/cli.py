"""The `shopllm` command line. Each subcommand lives in `jobs/<name>.py` with `add_arguments` and `run`.

Flags the subcommand does not know are passed to Beam untouched (`--runner`, `--direct_num_workers`, ...).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import sys

from shopllm import storage
from shopllm.errors import ShopllmError

COMMANDS = {
    "sample": "write the embedded sample shop (catalog + clickstream)",
    "ingest": "clean and validate raw catalog and events into curated/ and rejects/",
    "prepare": "train the tokenizer, extend the item vocabulary, write tokens/{train,valid,test}",
    "train": "train (or warm-start) the transformer into models/<version>/",
    "score": "write scores/recommendations and scores/descriptions with the latest model",
    "evaluate": "compute ranking and description metrics from the published scores",
    "report": "write reports/dt=D/report.{json,html}",
    "nightly": "run every stage for one date, resumable, under a lock",
    "demo": "write the sample shop and run nightly on it",
}

# Subcommands whose unknown flags go to Beam; the others reject unknown flags.
BEAM_COMMANDS = {"ingest", "prepare", "score", "nightly", "demo"}


def today_utc() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def valid_date(s: str) -> str:
    try:
        return dt.date.fromisoformat(s).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {s!r}") from None


def output_root(s: str) -> str:
    """--out: a local folder, or an object-storage URI (s3://bucket/prefix, gs://…); kept as given (a
    file:// URI becomes its path)."""
    return s[len("file://") :] if s.startswith("file://") else s


def add_common(p: argparse.ArgumentParser, *, out=True, date=True, config=True) -> None:
    """Flags most stages share; call from a subcommand's add_arguments."""
    if out:
        p.add_argument(
            "--out",
            required=True,
            type=output_root,
            help="output root, a folder or s3:// / gs:// URI (curated/, tokens/, models/, scores/, reports/)",
        )
    if date:
        p.add_argument(
            "--date", type=valid_date, default=today_utc(), help="partition date YYYY-MM-DD (default: today, UTC)"
        )
    if config:
        p.add_argument("--config", help="TOML or YAML config file; flags override it")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the subcommand `only` (if given) has its module imported and its flags added.

    Importing every stage (torch, Beam) costs seconds, so `shopllm ingest ...` imports just jobs.ingest.
    """
    parser = argparse.ArgumentParser(prog="shopllm", description="Offline AI shopping guide for e-commerce shops.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module = importlib.import_module(f"jobs.{name}")
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def subcommand_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    return parser._subparsers._group_actions[0].choices[name]


def _chosen_command(argv: list[str]) -> str | None:
    return next((a for a in argv if a in COMMANDS), None)


def configure_logging(verbose: bool) -> None:
    """Our format and level on stderr. Beam's import already put a plain handler on the root logger;
    replace plain stream handlers (only those: test harnesses' capturing handlers stay)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if type(h) is logging.StreamHandler:
            root.removeHandler(h)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_drop_known_noise)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for chatty in ("apache_beam", "matplotlib", "PIL"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


_NOISE = ("Resource module is not available", "apitools not found")


def _drop_known_noise(record: logging.LogRecord) -> bool:
    """Beam logs these warnings through the root logger on every run; they say nothing about ours."""
    return not any(n in str(record.msg) for n in _NOISE)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging("-v" in argv or "--verbose" in argv)  # before Beam's import logs through the root logger
    parser = build_parser(only=_chosen_command(argv))
    args, rest = parser.parse_known_args(argv)
    storage.configure(storage.StorageOptions.from_beam_args(rest))  # Beam's --s3_* flags reach pyarrow too
    if args.command not in BEAM_COMMANDS and (unknown := storage.without_storage_flags(rest)):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args._module.run(args, rest) or 0)
    except ShopllmError as e:
        print(f"shopllm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"shopllm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

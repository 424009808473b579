"""The shops the language benchmarks run on, and one nightly run of each, shared between benchmarks.

- `sample`: the embedded sample shop (`shopllm.sample`), the one `make demo` runs on;
- `other`: a second synthetic shop with other categories, attribute keys, brands, description voice and
  query words (`benchmarks.other_shop`), so a figure that holds only on the sample's templates shows.

`nightly(shop, root)` writes the shop under root/<shop>/input and runs `shopllm nightly` on it with the
nightly defaults (or `config`), in its own process, its log in root/<shop>/nightly.log. A finished run is
reused by the next benchmark when the code it depends on, the shop and the config are the ones it ran with
(root/<shop>/stamp.json); anything else starts it again from nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATE = "2026-11-28"
QUICK_CONFIG = """\
[train]
max_steps = 60
max_minutes = 0.5
eval_every = 20
"""


def source_hash(extra: str = "") -> str:
    """Of the code a nightly run's outputs depend on (every .py under shopllm/, pipelines/ and jobs/, and the
    shop generators) and `extra` (the shop and config)."""
    h = hashlib.sha256(extra.encode())
    files = [p for folder in ("shopllm", "pipelines", "jobs") for p in sorted((ROOT / folder).rglob("*.py"))]
    for path in files + [ROOT / "benchmarks/shops.py", ROOT / "benchmarks/other_shop.py"]:
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def write_shop(shop: str, folder: Path, quick: bool) -> dict:
    if shop == "sample":
        from shopllm.sample import SampleConfig, write_sample

        cfg = SampleConfig(items=300, users=150, events=8000, days=10) if quick else SampleConfig()
        return write_sample(folder, cfg)
    if shop == "other":
        from benchmarks.other_shop import OtherShopConfig, write_other_shop

        cfg = OtherShopConfig(items=250, users=120, events=6000, days=10) if quick else OtherShopConfig()
        return write_other_shop(folder, cfg)
    raise ValueError(f"unknown shop {shop!r} (sample or other)")


def parse_args(argv, doc: str, json_default: str):
    """The flags every per-shop benchmark takes: --quick, --shops, --work, --json."""
    import argparse

    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small shops and a short training (a smoke run)")
    p.add_argument("--shops", default="sample,other")
    p.add_argument("--work", default="bench_out/shops", help="where the shops' nightly runs live (reused)")
    p.add_argument("--json", default=json_default)
    return p.parse_args(argv)


def write_results(args, results: dict) -> None:
    """The per-shop results as JSON at --json."""
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"quick": args.quick, **results}, indent=2, ensure_ascii=False))


def nightly(shop: str, root: Path, *, quick: bool = False, config: str | None = None) -> Path:
    """The output root of a finished nightly run on `shop` (run now unless a matching one is there)."""
    work = Path(root).resolve() / shop  # absolute: the nightly runs in its own process from the checkout
    config = config if config is not None else (QUICK_CONFIG if quick else "")
    stamp = {"source": source_hash(f"{shop}:{quick}:{config}")}
    stamp_path, out = work / "stamp.json", work / "out"
    if stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        print(f"{shop}: reusing the nightly run in {out}", flush=True)
        return out
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_shop(shop, work / "input", quick)
    argv = [
        sys.executable,
        "-m",
        "jobs",
        "nightly",
        "--catalog",
        str(work / "input/catalog/*.jsonl.gz"),
        "--events",
        str(work / "input/events/*.jsonl.gz"),
        "--out",
        str(out),
        "--date",
        DATE,
    ]
    if config:
        (work / "config.toml").write_text(config)
        argv += ["--config", str(work / "config.toml")]
    print(
        f"{shop}: running the nightly job ({'quick' if quick else 'nightly defaults'}), log in {work / 'nightly.log'}",
        flush=True,
    )
    start = time.monotonic()
    with open(work / "nightly.log", "w") as log:
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if rc:
        raise SystemExit(f"{shop}: the nightly run failed (exit {rc}); see {work / 'nightly.log'}")
    print(f"{shop}: nightly took {time.monotonic() - start:.0f} s", flush=True)
    stamp_path.write_text(json.dumps(stamp))
    return out

"""The nightly job end to end on a tiny sample shop: reruns, a second and third night, the report, kills, locks,
bad input."""

from __future__ import annotations

import dataclasses
import html
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from shopllm import modelstore, runstate, schemas, storage
from shopllm.sample import SampleConfig, write_sample

DATE = "2026-11-28"
NEXT = "2026-11-29"
THIRD = "2026-11-30"
TINY = SampleConfig(items=120, users=40, events=3000, days=10, end_date=DATE, seed=3)
CONFIG = """
[prepare]
vocab_size = 500
[train]
max_steps = 30
max_minutes = 30.0
eval_every = 15
checkpoint_every = 10
batch_size = 16
[train.model]
n_layer = 2
n_head = 2
n_embd = 32
block_size = 192
dropout = 0.0
[score]
max_new_tokens = 16
top_k = 5
min_query_count = 2
"""
PUBLISHED = [*schemas.NIGHTLY_DATASETS, schemas.REPORTS]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("shop")
    write_sample(root / "input", TINY)
    (root / "tiny.toml").write_text(CONFIG)
    return root


def nightly_argv(shop: Path, out: Path, date: str = DATE, *extra: str) -> list[str]:
    return [
        "nightly",
        "--catalog",
        str(shop / "input/catalog/*.jsonl.gz"),
        "--events",
        str(shop / "input/events/*.jsonl.gz"),
        "--out",
        str(out),
        "--date",
        date,
        "--config",
        str(shop / "tiny.toml"),
        *extra,
    ]


def error_lines(stderr: str) -> list[str]:
    """The user-facing error lines (progress log lines start with a timestamp)."""
    return [line for line in stderr.splitlines() if line.startswith("shopllm")]


def read_all(out: Path, date: str) -> dict[str, pd.DataFrame]:
    frames = {}
    for ds in PUBLISHED:
        if ds == schemas.REPORTS:
            continue
        files = storage.partition_files(out, ds, date)
        frames[ds] = pd.concat([pq.read_table(f).to_pandas() for f in files]) if files else pd.DataFrame()
    return frames


@pytest.fixture(scope="module")
def first_night(shop):
    out = shop / "out"
    assert main(nightly_argv(shop, out)) == 0
    return out


def test_first_night_publishes_everything_with_a_report(first_night):
    out = first_night
    for ds in PUBLISHED:
        assert storage.is_published(storage.partition_dir(out, ds, DATE)), ds
    assert modelstore.latest_version(out) == modelstore.version_for(DATE)
    recs = storage.read_partition(out, schemas.RECOMMENDATIONS, DATE).to_pandas()
    assert set(recs.scope) >= {"user", "session"}
    report = Path(storage.partition_dir(out, schemas.REPORTS, DATE))
    html = (report / "report.html").read_text()
    for title in ("Training loss", "Rejects by reason", "Time per stage"):
        assert f'<figure class="plot" aria-label="{title}"><svg' in html, title
    assert "Most recommended items" in html and "Ten published at random" in html
    data = storage.read_json(report / "report.json")
    ingest = data["summaries"]["ingest"]
    for source in ("catalog", "events"):
        s = ingest[source]
        assert s["read"] == s["kept"] + s["deduplicated"] + sum(s["rejected"].values())
    assert data["top_items"] and data["sample_descriptions"]
    assert not list(out.glob("**/_staging-*"))


def test_rerun_of_the_same_date_gives_identical_partitions(shop, first_night):
    before = read_all(first_night, DATE)
    assert main(nightly_argv(shop, first_night, DATE, "--force")) == 0
    after = read_all(first_night, DATE)
    for ds in before:
        pd.testing.assert_frame_equal(before[ds].reset_index(drop=True), after[ds].reset_index(drop=True), obj=ds)


def test_rerun_without_force_resumes_and_skips_completed_stages(shop, first_night, capsys):
    assert main(nightly_argv(shop, first_night)) == 0
    for stage in ("ingest", "prepare", "train", "score", "evaluate", "report"):
        assert runstate.stage_done(first_night, DATE, stage)


def test_second_night_writes_new_partitions_and_a_warm_started_model(shop, first_night):
    assert main(nightly_argv(shop, first_night, NEXT)) == 0
    for ds in PUBLISHED:
        assert storage.is_published(storage.partition_dir(first_night, ds, NEXT)), ds
    assert modelstore.latest_version(first_night) == modelstore.version_for(NEXT)
    train = storage.read_json(storage.summary_path(first_night, NEXT, "train"))
    assert train.get("warm_started") or train.get("warm_start")
    # descriptions of unchanged items carry over from the first night
    descs = storage.read_partition(first_night, schemas.DESCRIPTIONS, NEXT).to_pandas()
    assert (descs.generated_dt == DATE).all()


def third_night_report(shop: Path, out: Path) -> Path:
    """The report folder of the third night, running the second and third nights where not yet published."""
    for date in (NEXT, THIRD):
        if not storage.is_published(storage.partition_dir(out, schemas.REPORTS, date)):
            assert main(nightly_argv(shop, out, date)) == 0
    return Path(storage.partition_dir(out, schemas.REPORTS, THIRD))


def test_the_report_of_a_third_night_reads_at_a_glance(shop, first_night):
    """What a person checks: headline cards with their change, a trend point per night, tables without raw
    JSON, every shown description with its flags, one raw example per reject reason."""
    folder = third_night_report(shop, first_night)
    page = (folder / "report.html").read_text()
    data = storage.read_json(folder / "report.json")
    assert data["previous_date"] == NEXT and [r["date"] for r in data["metrics_history"]] == [DATE, NEXT, THIRD]
    assert "Metrics over nights" in data["plots"] and 'aria-label="Metrics over nights"' in page
    assert page.count('class="card"') >= 9
    changes = re.findall(r'<div class="change">([^<]*)</div>', page)
    assert "first night" not in changes and any(c.startswith(("+", "-")) for c in changes)
    cells = re.findall(r"<td>(.*?)</td>", page, flags=re.S)
    assert cells and not [c for c in cells if html.unescape(c).lstrip().startswith(("{", "["))]
    shown = data["summaries"]["evaluate"]["descriptions"]["examples"] + data["fallback_examples"]
    assert shown and all(
        e.get("flags") and html.escape(e.get("description") or e["published instead"]) in page for e in shown
    )
    assert all(html.escape(e["model text (not published)"]) in page for e in data["fallback_examples"])
    reasons = {(r["source"], r["reason"]) for r in data["reject_examples"]}
    ingest = data["summaries"]["ingest"]
    assert reasons == {(src, r) for src in ("catalog", "events") for r, n in ingest[src]["rejected"].items() if n}


def test_second_concurrent_run_is_refused(shop, tmp_path, capsys):
    out = tmp_path / "out"
    with runstate.RunLock(out):
        assert main(nightly_argv(shop, out)) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "another run holds" in err[0]
    assert not (out / schemas.CURATED_ITEMS).exists()


def test_an_unreachable_object_store_fails_in_one_line_and_writes_no_local_folder(shop, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = nightly_argv(shop, tmp_path)
    argv[argv.index("--out") + 1] = "s3://shop/prefix"
    argv += ["--s3_endpoint_url=http://127.0.0.1:9", "--s3_access_key_id=k", "--s3_secret_access_key=s"]
    try:
        assert main(argv) == 2
    finally:
        storage.configure(storage.StorageOptions())
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "cannot write to --out s3://shop/prefix" in err[0]
    assert not (tmp_path / "s3:").exists()


def test_missing_input_fails_fast_and_publishes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "nightly",
        "--catalog",
        str(tmp_path / "nope/*.jsonl"),
        "--events",
        str(tmp_path / "none.jsonl"),
        "--out",
        str(out),
        "--date",
        DATE,
    ]
    assert main(argv) != 0
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "ingest" in err[0] and "nope" in err[0]
    assert not list(out.glob(f"**/{storage.SUCCESS}"))
    assert not (out / "curated").exists() and not (out / "rejects").exists()


def test_bad_config_fails_with_one_line(shop, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nmax_stepz = 1\n")
    argv = nightly_argv(shop, tmp_path / "out")
    argv[argv.index("--config") + 1] = str(bad)
    assert main(argv) != 0
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "max_stepz" in err[0]


def test_killed_in_every_stage_then_resumed_completes(shop, tmp_path):
    """SIGKILL the nightly once inside each stage in turn; every restart resumes; the end result is complete."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "jobs", *nightly_argv(shop, out)]
    killed_inside = []
    for stage in ("ingest", "prepare", "train", "score", "evaluate", "report"):
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        for line in proc.stderr:
            if f"[{stage}] starting" in line:
                time.sleep(0.05)  # prepare takes ~0.3 s on this shop when the machine is idle
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=300)
        if proc.returncode == -signal.SIGKILL and not runstate.stage_done(out, DATE, stage):
            killed_inside.append(stage)
    # evaluate can finish within the 0.05 s; the long stages must really have been cut short
    assert {"ingest", "prepare", "train", "score"} <= set(killed_inside), killed_inside
    final = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    assert "stale lock" in final.stderr or "took over" in final.stderr
    for ds in PUBLISHED:
        assert storage.is_published(storage.partition_dir(out, ds, DATE)), ds
    assert not list(out.glob("**/_staging-*"))
    assert not list(out.glob("**/.*.tmp"))
    recs = storage.read_partition(out, schemas.RECOMMENDATIONS, DATE).to_pandas()
    assert recs.groupby(["scope", "subject_id"]).item_id.nunique().eq(5).all()


@pytest.fixture(scope="module")
def three_nights(tmp_path_factory) -> Path:
    """The report folder of the third of three nights of a shop whose clickstream goes on: night D reads the
    catalog and the event files of the days up to D, as a nightly job on a growing feed does."""
    root = tmp_path_factory.mktemp("nights")
    write_sample(root / "input", dataclasses.replace(TINY, end_date=THIRD, days=12))
    (root / "tiny.toml").write_text(CONFIG)
    for date in (DATE, NEXT, THIRD):
        events = root / date / "events"
        events.mkdir(parents=True)
        for f in sorted((root / "input/events").glob("events-*.jsonl.gz")):
            if f.name.removeprefix("events-")[:10] <= date:
                shutil.copy(f, events / f.name)
        assert (
            main(
                [
                    "nightly",
                    "--catalog",
                    str(root / "input/catalog/*.jsonl.gz"),
                    "--events",
                    str(events / "*.jsonl.gz"),
                    "--out",
                    str(root / "out"),
                    "--date",
                    date,
                    "--config",
                    str(root / "tiny.toml"),
                ]
            )
            == 0
        )
    return Path(storage.partition_dir(root / "out", schemas.REPORTS, THIRD))


@pytest.mark.slow
def test_the_third_night_report_in_headless_chromium(three_nights, tmp_path):
    """The page as Chromium builds it: every card with a value and its change, each plot drawn with a point
    per night, no JSON in any cell, every description beside its flags. Screenshot: tmp_path/report.png."""
    from tests import browser

    shot = tmp_path / "report.png"
    page = browser.Page(browser.render(browser.install(), three_nights / "report.html", tmp_path / "profile", shot))
    assert shot.stat().st_size > 20_000  # a drawn page, not a blank one
    cards = {c["label"]: c for c in page.cards}
    assert len(cards) >= 10 and all(c.get("value") for c in cards.values())
    for label in (
        "catalog items",
        "events kept",
        "records rejected",
        "user ndcg@10",
        "session ndcg@10",
        "search ndcg@10",
        "catalog with a model description",
        "run time before the report",
    ):
        assert cards[label]["value"] != "n/a" and cards[label]["change"][:1] in "+-", cards[label]
    assert int(cards["events kept"]["change"].replace(",", "")) > 0  # the feed grew since last night
    tonight = cards["tonight's descriptions published as generated"]  # the catalog did not change: none new
    assert (tonight["value"], tonight["change"]) == ("n/a", "not measured tonight")
    assert set(page.plots) >= {
        "Metrics over nights",
        "Rejects by reason",
        "Training loss",
        "Validation ndcg@10",
        "Time per stage",
    }
    trends = page.plots["Metrics over nights"]
    assert len(trends) == 5 and all(points == 3 for points in trends.values()), trends  # a point per night
    assert page.plots["Validation ndcg@10"] and all(page.plots["Validation ndcg@10"].values())
    cells = [
        cell for t in page.tables for row in t["rows"] for column, cell in zip(t["columns"], row) if column != "raw"
    ]  # the raw column shows a rejected record as it came in (JSON Lines, here)
    assert cells and not [c for c in cells if c.startswith(("{", "["))]
    for heading in ("Ten published at random", "Fallbacks"):
        table = page.table(heading)
        flags = table["columns"].index("flags")
        assert table["rows"] and all(row[flags] for row in table["rows"]), heading
    assert "description" in page.table("Ten published at random")["columns"]

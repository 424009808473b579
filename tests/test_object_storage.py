"""The nightly on object storage: raw inputs and every output on a real S3-compatible server (moto, started by
the test on 127.0.0.1), the Beam stages on Beam's portable runner with an external worker pool, no local
`--out`. Killed mid-run and rerun, refused while another run holds the lease, and equal to a local run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from jobs.cli import main
from shopllm import runstate, schemas, storage
from shopllm.sample import write_sample
from tests.test_nightly import CONFIG, DATE, TINY

OUT = "s3://shop/nightly"
# The outputs a run on S3 must equal to a local run's: every dataset but the per-attempt report.
COMPARED = [ds for ds in schemas.NIGHTLY_DATASETS if ds != schemas.REPORTS]


def read_sorted(out: str, dataset: str) -> pd.DataFrame:
    files = storage.partition_files(out, dataset, DATE)
    frame = storage.read_table(files).to_pandas() if files else pd.DataFrame()
    if "file" in frame.columns:  # where a reject came from: s3://raw/... here, a local path there
        frame["file"] = frame["file"].str.rsplit("/", n=1).str[-1]
    if not len(frame):
        return frame
    row_text = frame.apply(lambda row: repr(tuple(row)), axis=1)  # some columns hold arrays: sort_values refuses
    return frame.iloc[row_text.argsort(kind="stable")].reset_index(drop=True)


def nightly_args(catalog: str, events: str, out: str, config: str) -> list[str]:
    return ["nightly", "--catalog", catalog, "--events", events, "--out", out, "--date", DATE, "--config", config]


@pytest.mark.slow
def test_the_nightly_on_s3_on_the_portable_runner_equals_a_local_run(s3, portable_runner, tmp_path):
    raw = tmp_path / "input"
    write_sample(raw, TINY)
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG)
    for source in ("catalog", "events"):
        for f in sorted((raw / source).iterdir()):
            storage.upload(str(f), f"s3://raw/{source}/{f.name}")
    local = tmp_path / "local"
    local_args = nightly_args(str(raw / "catalog/*.jsonl.gz"), str(raw / "events/*.jsonl.gz"), str(local), str(config))
    assert main(local_args) == 0

    argv = nightly_args("s3://raw/catalog/*.jsonl.gz", "s3://raw/events/*.jsonl.gz", OUT, str(config))
    cmd = [sys.executable, "-m", "jobs", *argv, *s3.flags, *portable_runner.flags]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # only the flags say where S3 is
    env["PYTHONUNBUFFERED"] = "1"

    # a second run is refused while the lease is held
    with runstate.RunLock(OUT, lease_seconds=60):
        refused = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert refused.returncode == 2 and "another run holds s3://shop/nightly/.shopllm.lock" in refused.stderr

    # killed inside training, after ingest and prepare were committed on S3
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path)
    for line in proc.stderr:
        if "[train] starting" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    assert runstate.stage_done(OUT, DATE, "prepare") and not runstate.stage_done(OUT, DATE, "train")
    # a stray attempt, as a run killed while writing leaves one: never read, removed by the rerun
    stray = storage.join(storage.partition_dir(OUT, schemas.CURATED_ITEMS, DATE), storage.ATTEMPTS, "0-killed")
    storage.write_bytes(storage.join(stray, "part-00000.parquet"), b"not parquet")

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "took over" in rerun.stderr or "taking over" in rerun.stderr
    assert not list(tmp_path.glob("s3*")), "a URI became a local folder"
    assert not any("0-killed" in k for k in s3.keys("shop"))

    for ds in COMPARED:
        assert storage.is_published(storage.partition_dir(OUT, ds, DATE)), ds
        on_s3, on_disk = read_sorted(OUT, ds), read_sorted(str(local), ds)
        pd.testing.assert_frame_equal(on_s3, on_disk, check_exact=False, rtol=1e-5, atol=1e-6, obj=ds)
    report = storage.committed_file(storage.partition_dir(OUT, schemas.REPORTS, DATE), "report.html")
    assert "Time per stage" in storage.read_text(report)
    assert storage.read_text(storage.join(OUT, "models", "LATEST")).strip() == f"v{DATE}"

"""The storage layer on a local disk and on a real S3-compatible server (moto, started by the test):
committed folders, what readers see, the object-storage lease."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from shopllm import runstate, storage

DATE = "2024-05-01"
TABLE = pa.table({"item_id": ["a", "b", "c"], "n": [1, 2, 3]})


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    request.getfixturevalue("s3")
    return "s3://shop/nightly"


def test_a_partition_is_read_only_once_committed(out):
    with storage.publishing(out, "scores", DATE) as tmp:
        storage.write_table(TABLE, tmp)
        folder = storage.partition_dir(out, "scores", DATE)
        assert not storage.is_published(folder)
        with pytest.raises(FileNotFoundError, match="not published"):
            storage.read_partition(out, "scores", DATE)
    assert storage.read_partition(out, "scores", DATE).equals(TABLE)
    assert storage.published_dates(out, "scores") == [DATE]


def test_a_failed_block_publishes_nothing_and_keeps_the_old_partition(out):
    with storage.publishing(out, "scores", DATE) as tmp:
        storage.write_table(TABLE, tmp)
    with pytest.raises(RuntimeError), storage.publishing(out, "scores", DATE) as tmp:
        storage.write_table(TABLE.slice(0, 1), tmp)
        raise RuntimeError("killed")
    assert storage.read_partition(out, "scores", DATE).equals(TABLE)


def test_a_rerun_replaces_the_partition_whole(out):
    with storage.publishing(out, "scores", DATE) as tmp:
        storage.write_table(TABLE, tmp, "part-00000.parquet")
        storage.write_table(TABLE, tmp, "part-00001.parquet")
    with storage.publishing(out, "scores", DATE) as tmp:
        storage.write_table(TABLE.slice(0, 1), tmp)
    assert storage.read_partition(out, "scores", DATE).num_rows == 1
    assert storage.clean_staging(out) == (1 if storage.is_remote(out) else 0)  # the replaced attempt's files
    assert storage.read_partition(out, "scores", DATE).num_rows == 1


def test_publishing_together_gives_an_empty_dataset_a_typed_empty_file(out):
    with storage.publishing_together(out, DATE, {"full": None, "empty": TABLE.schema}) as folders:
        storage.write_table(TABLE, folders["full"])
    empty = storage.read_partition(out, "empty", DATE)
    assert empty.num_rows == 0 and empty.schema == TABLE.schema


def test_object_storage_readers_ignore_stray_attempts_and_uncommitted_files(s3):
    out = "s3://shop/nightly"
    with storage.publishing(out, "scores", DATE) as tmp:
        storage.write_table(TABLE, tmp)
    folder = storage.partition_dir(out, "scores", DATE)
    # a killed rerun left a whole attempt, and a file was dropped straight into the partition
    storage.write_table(TABLE.slice(0, 1), storage.join(folder, storage.ATTEMPTS, "20240101T000000-dead"))
    storage.write_table(TABLE.slice(0, 2), folder, "part-99999.parquet")
    assert storage.read_partition(out, "scores", DATE).equals(TABLE)
    assert len(storage.partition_files(out, "scores", DATE)) == 1
    assert storage.clean_staging(out) == 1
    keys = s3.keys("shop", "nightly/scores/")
    assert not any("dead" in k for k in keys) and any(k.endswith("/_SUCCESS") for k in keys)


def test_object_storage_commit_writes_files_then_manifest_then_success(s3):
    out = "s3://shop/nightly"
    with storage.publishing(out, "scores", DATE) as tmp:
        storage.write_table(TABLE, tmp)
        assert s3.keys("shop", "nightly/scores/dt=2024-05-01/_manifests") == []
    success = storage.read_json(storage.join(storage.partition_dir(out, "scores", DATE), storage.SUCCESS))
    manifest = storage.read_json(storage.join(storage.partition_dir(out, "scores", DATE), success["manifest"]))
    assert manifest["files"] == [f"{storage.ATTEMPTS}/{success['attempt']}/part-00000.parquet"]


def test_duckdb_reads_exactly_the_files_a_manifest_lists(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    out = str(tmp_path / "out")
    with storage.publishing(out, "scores", DATE) as tmp:
        storage.write_table(TABLE, tmp)
    files = storage.partition_files(out, "scores", DATE)
    assert duckdb.sql(f"select count(*) from read_parquet({files!r})").fetchall() == [(3,)]


def test_an_unreachable_endpoint_fails_at_once_with_one_line():
    before = storage.options()
    storage.configure(storage.StorageOptions("http://127.0.0.1:9", "k", "s", None, "us-east-1"))
    try:
        started = time.monotonic()
        with pytest.raises(storage.OutputError) as e:
            storage.check_writable("s3://shop/nightly")
        assert "cannot write to --out s3://shop/nightly" in str(e.value) and "\n" not in str(e.value)
        assert time.monotonic() - started < 60
    finally:
        storage.configure(before)


def test_storage_flags_come_from_beam_args_in_either_form(monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    args = ["--s3_endpoint_url=http://h:1", "--s3_access_key_id", "k", "--runner=DirectRunner"]
    options = storage.StorageOptions.from_beam_args(args)
    assert (options.s3_endpoint_url, options.s3_access_key_id) == ("http://h:1", "k")
    assert storage.without_storage_flags(args) == ["--runner=DirectRunner"]


# ---- the object-storage lease ----------------------------------------------------------------------------


def test_a_second_run_is_refused_while_the_lease_lives(s3):
    with runstate.RunLock("s3://shop/nightly", lease_seconds=30):
        with pytest.raises(runstate.LockedError, match="another run holds"):
            runstate.RunLock("s3://shop/nightly").acquire()
    runstate.RunLock("s3://shop/nightly").acquire().release()  # released: free again


def test_renewal_keeps_the_lease_alive_past_its_first_expiry(s3):
    with runstate.RunLock("s3://shop/nightly", lease_seconds=1.5) as lease:
        time.sleep(2.5)  # the renewal thread has extended it (every 0.5 s)
        with pytest.raises(runstate.LockedError):
            runstate.RunLock("s3://shop/nightly").acquire()
        lease.check()


def test_an_expired_lease_is_taken_over_and_its_old_holder_stops(s3):
    stale = runstate.RunLock("s3://shop/nightly", lease_seconds=1).acquire()
    stale._stop.set()  # as if the process hung: no more renewals
    time.sleep(1.2)
    taker = runstate.RunLock("s3://shop/nightly", lease_seconds=30).acquire()
    assert taker.took_over is not None and taker.took_over["token"] == stale.token
    assert not stale.renew()
    with pytest.raises(runstate.LockedError, match="taken over"):
        stale.check()
    stale.release()  # must not delete the new holder's lease
    with pytest.raises(runstate.LockedError):
        runstate.RunLock("s3://shop/nightly").acquire()
    taker.release()


def test_stage_markers_on_object_storage(s3):
    out = "s3://shop/nightly"
    runstate.mark_done(out, DATE, "ingest", 1.5)
    assert runstate.stage_done(out, DATE, "ingest")
    runstate.clear_stages(out, DATE)
    assert not runstate.stage_done(out, DATE, "ingest")

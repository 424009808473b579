"""Config, storage publishing, the run lock and stage markers."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from shopllm import config, runstate, storage
from shopllm.errors import ConfigError


def test_example_config_is_the_defaults():
    example = Path(__file__).parent.parent / "jobs" / "shopllm.example.toml"
    assert example.read_text() == config.to_toml(config.Config()), "regenerate: python -m jobs.write_example_config"
    assert config.load(str(example)) == config.Config()
    settings = [line for line in example.read_text().splitlines() if " = " in line]
    assert settings and [line for line in settings if "  # " not in line] == []  # every knob explained


def test_config_file_overrides_and_rejects_unknown(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  max_steps: 7\n  model:\n    n_layer: 3\nscore:\n  top_k: 5\n")
    cfg = config.load(str(p))
    assert (cfg.train.max_steps, cfg.train.model.n_layer, cfg.score.top_k) == (7, 3, 5)
    assert cfg.ingest == config.IngestConfig()
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nmax_stepz = 3\n")
    with pytest.raises(ConfigError, match="max_stepz"):
        config.load(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        config.load(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize(
    "text, named",
    [
        ("[train]\nmax_steps = 0\n", "config.train.max_steps"),
        ("[train]\nema_decay = 1.0\n", "config.train.ema_decay"),
        ("[score]\ntop_k = 0\n", "config.score.top_k"),
        ("[score]\ntop_p = 1.5\n", "top_p"),
        ("[prepare]\ntie_shuffles = 65\n", "config.prepare.tie_shuffles"),
        ("[prepare]\nsearch_holdout = 1.0\n", "config.prepare.search_holdout"),
        ("[ingest]\nshards = 0\n", "config.ingest.shards"),
    ],
)
def test_an_impossible_setting_fails_on_load_naming_it(tmp_path, text, named):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=named):
        config.load(str(bad))


def test_publish_replaces_partition_whole_and_leaves_no_staging(tmp_path):
    t1 = pa.table({"a": [1, 2]})
    with storage.publishing(tmp_path, "x/y", "2026-01-01") as tmp:
        storage.write_table(t1, tmp, "part-00000.parquet")
        storage.write_table(t1, tmp, "part-00001.parquet")
    assert storage.read_partition(tmp_path, "x/y", "2026-01-01").num_rows == 4
    with storage.publishing(tmp_path, "x/y", "2026-01-01") as tmp:
        storage.write_table(pa.table({"a": [9]}), tmp)
    assert storage.read_partition(tmp_path, "x/y", "2026-01-01").column("a").to_pylist() == [9]
    assert [p.name for p in (tmp_path / "x/y").iterdir()] == ["dt=2026-01-01"]


def test_failed_write_publishes_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with storage.publishing(tmp_path, "x", "2026-01-01") as tmp:
            storage.write_table(pa.table({"a": [1]}), tmp)
            raise RuntimeError("boom")
    assert storage.published_dates(tmp_path, "x") == []
    assert list((tmp_path / "x").iterdir()) == []
    with pytest.raises(FileNotFoundError, match="not published"):
        storage.read_partition(tmp_path, "x", "2026-01-01")


def test_check_writable_fails_with_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(storage.OutputError, match="cannot write to --out"):
        storage.check_writable(f / "sub")


def test_lock_refuses_second_run_and_takes_over_stale(tmp_path):
    with runstate.RunLock(tmp_path):
        with pytest.raises(runstate.LockedError, match="another run holds"):
            runstate.RunLock(tmp_path).acquire()
    # a lock left by a dead process is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = runstate.RunLock(tmp_path)
    Path(lock.path).write_text(f'{{"pid": {dead.stdout.strip()}, "host": "{os.uname().nodename}", "started": "x"}}')
    with lock:
        assert lock.took_over["pid"] == int(dead.stdout)
    assert not Path(lock.path).exists()


def test_stage_markers(tmp_path):
    assert not runstate.stage_done(tmp_path, "2026-01-01", "ingest")
    runstate.mark_done(tmp_path, "2026-01-01", "ingest", 1.5)
    assert runstate.stage_done(tmp_path, "2026-01-01", "ingest")
    runstate.clear_stages(tmp_path, "2026-01-01")
    assert not runstate.stage_done(tmp_path, "2026-01-01", "ingest")

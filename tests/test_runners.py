"""The three Beam stages (ingest, prepare, score) on runners that share nothing with the driver but what the
pipeline carries: Beam's portable job service with an external SDK worker pool (the Fn API that Flink,
Spark and Dataflow workers speak), reading from and writing to a real S3-compatible server (moto), and the
direct runner's `multi_processing` mode. Each must write what the in-process runner writes: the same rows,
scores within 1e-6.

Also: S3 that cannot be reached, or credentials that are refused, stop a stage at once with one line.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pytest
import torch

from jobs.cli import main
from shopllm import modelstore, schemas, storage
from shopllm.model import GPT, GPTConfig
from shopllm.sample import SampleConfig, write_sample
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import ItemVocab
from tests.beam_services import portable_runner  # noqa: F401  (fixture)
from tests.s3server import free_port, s3  # noqa: F401  (s3: fixture)

DATE = "2026-11-28"
VERSION = "v-runners"
SHOP = SampleConfig(items=60, users=20, events=800, days=5, end_date=DATE, seed=5, dirty_rate=0.03)
CONFIG = """
[ingest]
shards = 3
[prepare]
vocab_size = 400
shard_rows = 200
[score]
max_new_tokens = 8
top_k = 5
min_query_count = 2
batch_size = 8
"""
DATASETS = [
    schemas.CURATED_ITEMS,
    schemas.CURATED_EVENTS,
    schemas.CURATED_SESSIONS,
    schemas.REJECTS_CATALOG,
    schemas.REJECTS_EVENTS,
    *(f"{schemas.TOKENS}/{split}" for split in schemas.SPLITS),
    schemas.RECOMMENDATIONS,
    schemas.DESCRIPTIONS,
]
MULTI_PROCESSING = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


# ---- running the stages ----------------------------------------------------------------------------


def save_random_model(out: str) -> None:
    """A seeded two-layer model over prepare's tokenizer and item vocabulary, saved under `out` (training is
    not a Beam stage; every run gets the same weights)."""
    tokenizer_json = storage.join(out, "vocab", "tokenizer.json")
    tokenizer = TextTokenizer.load(tokenizer_json)
    items = ItemVocab.load(storage.join(out, "vocab"))
    torch.manual_seed(0)
    shape = dict(n_layer=2, n_head=2, n_embd=32, block_size=128, dropout=0.0)
    model = GPT(GPTConfig(n_text=tokenizer.n_text, n_items=len(items), **shape))
    modelstore.save(out, VERSION, model, tokenizer_json=tokenizer_json, items=items, metrics={})


def run_stages(catalog: str, events: str, out: str, config: str, flags: list[str]) -> None:
    """ingest, prepare and score one date into `out`, the Beam flags given to each stage."""
    common = ["--out", out, "--date", DATE, "--config", config, *flags]
    assert main(["ingest", "--catalog", catalog, "--events", events, *common]) == 0
    assert main(["prepare", *common]) == 0
    save_random_model(out)
    assert main(["score", "--model", VERSION, *common]) == 0


def read(out: str, dataset: str) -> pa.Table:
    """A published partition, files in name order; a reject's `file` as its name (the inputs' folders differ
    between runs)."""
    table = storage.read_partition(out, dataset, DATE)
    if "file" in table.column_names:
        names = pa.array([storage.name(f) for f in table["file"].to_pylist()], pa.string())
        table = table.set_column(table.schema.get_field_index("file"), "file", names)
    return table


def assert_same_outputs(out: str, expected: str) -> None:
    """Every dataset of `out` holds the rows of `expected`'s, in the same order; floats within 1e-6."""
    for dataset in DATASETS:
        got, want = read(out, dataset), read(expected, dataset)
        assert got.num_rows == want.num_rows, dataset
        floats = [f.name for f in want.schema if pa.types.is_floating(f.type)]
        assert got.drop_columns(floats).equals(want.drop_columns(floats)), dataset
        for column in floats:
            np.testing.assert_allclose(
                got[column].to_numpy(), want[column].to_numpy(), rtol=0, atol=1e-6, err_msg=dataset
            )


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The raw sample shop, the config, and its outputs from the in-process runner (the reference)."""
    root = tmp_path_factory.mktemp("runners")
    write_sample(root / "input", SHOP)
    config = root / "shop.toml"
    config.write_text(CONFIG)
    expected = str(root / "in-process")
    run_stages(str(root / "input/catalog/*.jsonl.gz"), str(root / "input/events/*.jsonl.gz"), expected, str(config), [])
    for dataset in (schemas.CURATED_ITEMS, schemas.REJECTS_EVENTS, schemas.RECOMMENDATIONS, schemas.DESCRIPTIONS):
        assert read(expected, dataset).num_rows, f"the sample shop gives no {dataset}: nothing would be compared"
    return root, str(config), expected


# ---- the runners ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_portable_runner_with_an_external_worker_pool_on_s3_equals_in_process(shop, s3, portable_runner):  # noqa: F811
    """Inputs and outputs on S3, the stages on the job service; the worker pool's environment has no AWS_*
    variables, so the workers reach S3 only through the options each DoFn carries."""
    root, config, expected = shop
    for source in ("catalog", "events"):
        for f in sorted((root / "input" / source).iterdir()):
            storage.upload(str(f), f"s3://raw/{source}/{f.name}")
    out = "s3://shop/portable"
    flags = [*s3.flags, *portable_runner.flags]
    run_stages("s3://raw/catalog/*.jsonl.gz", "s3://raw/events/*.jsonl.gz", out, config, flags)
    assert_same_outputs(out, expected)
    assert not any(p.name.startswith("s3") for p in root.parent.iterdir()), "a URI became a local folder"
    assert not os.path.exists("s3:"), "a URI became a local folder"


@pytest.mark.slow
def test_multi_processing_direct_runner_equals_in_process(shop):
    root, config, expected = shop
    out = str(root / "multi-processing")
    catalog, events = str(root / "input/catalog/*.jsonl.gz"), str(root / "input/events/*.jsonl.gz")
    run_stages(catalog, events, out, config, MULTI_PROCESSING)
    assert_same_outputs(out, expected)


# ---- S3 that cannot be reached fails fast ---------------------------------------------------------------

STAGE_ARGV = {
    "ingest": ["ingest", "--catalog", "s3://raw/catalog/*.jsonl.gz", "--events", "s3://raw/events/*.jsonl.gz"],
    "prepare": ["prepare"],
    "score": ["score"],
}


@pytest.mark.parametrize("stage", list(STAGE_ARGV))
def test_an_unreachable_endpoint_stops_a_stage_at_once_with_one_line(stage, tmp_path, monkeypatch, capsys):
    """Nothing listens at the endpoint: the stage stops within seconds, one line on stderr, exit 2 (Beam's S3
    client alone would retry for minutes)."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    flags = [
        f"--s3_endpoint_url=http://127.0.0.1:{free_port()}",
        "--s3_access_key_id=k",
        "--s3_secret_access_key=s",
        "--s3_region_name=us-east-1",
    ]
    out = str(tmp_path / "out") if stage == "ingest" else "s3://shop/out"
    before = storage.options()
    t0 = time.monotonic()
    try:
        code = main([*STAGE_ARGV[stage], "--out", out, "--date", DATE, *flags])
    finally:
        storage.configure(before)
    assert code == 2 and time.monotonic() - t0 < 20
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("shopllm")]
    assert len(errors) == 1 and "s3://" in errors[0], errors


def test_score_reads_exactly_the_files_of_the_committed_attempt(s3, tmp_path):  # noqa: F811
    """On object storage a partition's folder also holds other attempts' files: the pipeline reads the
    files the committed manifest lists, never a glob of the folder."""
    import apache_beam as beam

    from pipelines.common import make_pipeline, run_pipeline
    from pipelines.score import _read

    out = "s3://shop/committed"
    with storage.publishing(out, "t", DATE) as staging:
        storage.write_table(pa.Table.from_pylist([{"item_id": "a"}, {"item_id": "b"}]), staging)
    stray = storage.join(storage.partition_dir(out, "t", DATE), storage.ATTEMPTS, "0-stray")
    storage.write_table(pa.Table.from_pylist([{"item_id": "stray"}]), stray)
    seen = tmp_path / "seen.txt"

    p = make_pipeline()
    rows = _read(beam.pvalue.PBegin(p), "ReadT", storage.partition_files(out, "t", DATE), ["item_id"])
    _ = (
        rows
        | beam.Map(lambda r: r["item_id"])
        | beam.combiners.ToList()
        | beam.Map(lambda ids: seen.write_text(",".join(sorted(ids))))
    )
    run_pipeline(p)
    assert seen.read_text() == "a,b"


def test_gzip_inputs_keep_their_bytes_on_s3(s3, tmp_path):  # noqa: F811
    """A .gz file uploaded and read back through the storage layer is the same gzip (pyarrow's streams would
    otherwise compress it again on the way in and decompress it on the way out, by its name)."""
    import gzip

    from shopllm import ingest

    local = tmp_path / "events.jsonl.gz"
    local.write_bytes(gzip.compress(b'{"a": 1}\n'))
    storage.upload(str(local), "s3://raw/events/events.jsonl.gz")
    assert storage.read_bytes("s3://raw/events/events.jsonl.gz") == local.read_bytes()
    with ingest.open_file("s3://raw/events/events.jsonl.gz") as f:
        assert f.read() == local.read_bytes()


def test_dofns_carry_the_drivers_storage_options_to_their_workers(s3):  # noqa: F811
    """What a worker in another process gets: the pickled DoFn, whose setup() applies the options the driver
    had when the pipeline was built."""
    import pickle

    from pipelines.ingest import _WriteShard

    dofn = pickle.loads(pickle.dumps(_WriteShard("s3://shop/x", schemas.ITEMS)))
    storage.configure(storage.StorageOptions())  # a worker whose environment says nothing about S3
    dofn.setup()
    assert storage.options() == s3.options

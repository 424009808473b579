"""`torchrun` across nodes: two "nodes" of one process each on this host (c10d rendezvous, gloo on CPU) train
`jobs.train` on S3 (moto) and end where one process at the same global batch ends; rank 0 alone writes the
checkpoints and the model."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch

from shopllm import modelstore, storage
from tests.s3server import S3, free_port
from tests.test_trainer import shop_out, write_config

DATE = "2024-01-01"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def node(rank: int, port: int, args: list[str]) -> subprocess.Popen:
    """One torchrun agent: node `rank` of 2, one process, rendezvous on 127.0.0.1:port (node 0 hosts it)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        f"--node_rank={rank}",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}",
        "--rdzv_id=shopllm-nodes-test",
        f"--rdzv_conf=is_host={int(rank == 0)},join_timeout=120",
        "--local_addr=127.0.0.1",
        "--max_restarts=0",
        "-m",
        "jobs.train",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": ROOT}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_two_nodes(args: list[str]) -> None:
    port = free_port()
    nodes = [node(r, port, args) for r in range(2)]
    outputs = []
    for p in nodes:
        try:
            outputs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in nodes:
                q.kill()
            raise
    for p, text in zip(nodes, outputs):
        assert p.returncode == 0, text[-4000:]


def checkpoint(out: str) -> dict:
    uri = f"{out}/checkpoints/dt={DATE}/train.pt"
    return torch.load(io.BytesIO(storage.read_bytes(uri)), weights_only=True)


def writes(s3: S3, key: str) -> int:
    """How many times an object was written (the bucket keeps every version)."""
    versions = s3.client().list_object_versions(Bucket="shop", Prefix=key).get("Versions", [])
    return sum(1 for v in versions if v["Key"] == key)


@pytest.mark.slow
def test_two_torchrun_nodes_on_s3_match_one_process(s3, tmp_path):
    from jobs.train import main

    s3.client().put_bucket_versioning(Bucket="shop", VersioningConfiguration={"Status": "Enabled"})
    conf = write_config(tmp_path / "c.toml", batch_size=8, max_steps=6, warmup_steps=2, eval_every=3,
                        checkpoint_every=3, lr=0.01, min_lr=0.001, log_every=3)  # fmt: skip
    tk = shop_out("s3://shop/one", DATE, n_items=10)
    shop_out("s3://shop/two", DATE, n_items=10, tokenizer=tk)

    def args(out: str) -> list[str]:
        return ["--out", out, "--date", DATE, "--config", conf, "--device", "cpu", *s3.flags]

    assert main(args("s3://shop/one")) == 0
    run_two_nodes(args("s3://shop/two"))

    one, two = (storage.read_json(storage.summary_path(o, DATE, "train")) for o in ("s3://shop/one", "s3://shop/two"))
    assert one["processes"] == 1 and two["processes"] == 2
    assert [v for _, v in two["loss_curve"]] == pytest.approx([v for _, v in one["loss_curve"]], abs=1e-5)
    a, b = checkpoint("s3://shop/one"), checkpoint("s3://shop/two")
    assert a["step"] == b["step"] == 6
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, atol=1e-5, rtol=1e-4)
    for k, v in modelstore.load("s3://shop/one", "v2024-01-01").model.state_dict().items():
        torch.testing.assert_close(modelstore.load("s3://shop/two", "v2024-01-01").model.state_dict()[k], v)

    ckpt = f"checkpoints/dt={DATE}/train.pt"
    assert writes(s3, f"two/{ckpt}") == writes(s3, f"one/{ckpt}") == 3  # steps 3 and 6, and the end: rank 0 only
    assert len(storage.list_names(f"s3://shop/two/models/v{DATE}/_attempts")) == 1  # one model commit

"""The trainer, the token stream and the train job, on tiny shards built here with the real schemas."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from shopllm import modelstore, storage
from shopllm.config import ModelConfig, TrainConfig
from shopllm.data import Position, TokenStream, pad_right, read_eval_rows, shard_files
from shopllm.errors import ShopllmError
from shopllm.metrics import evaluate_rows
from shopllm.model import GPT, GPTConfig
from shopllm.schemas import TOKENS, TOKENS_SCHEMA
from shopllm.sequences import history_prompt, history_sequence
from shopllm.tokenizer import TextTokenizer
from shopllm.trainer import Trainer, get_lr
from shopllm.vocab import ItemVocab

N_TEXT = 40  # stand-in text vocabulary for the trainer-only tests
N_ITEMS = 12


def cycle_histories(n_users: int, n_items: int, n_text: int, length: int = 8, seed: int = 0):
    """Users walk the items in a cycle (i -> i+1): an easy, learnable next-item rule."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n_users):
        start = int(torch.randint(n_items, (1,), generator=g))
        rows.append([n_text + (start + k) % n_items for k in range(length)])
    return rows


def token_table(rows: list[dict]) -> pa.Table:
    full = [
        {"kind": "history", "subject_id": None, "target_item": None, "target_id": -1, "history_ids": [], **r}
        for r in rows
    ]
    return pa.Table.from_pylist(full, schema=TOKENS_SCHEMA)


def write_split(out, split: str, date: str, rows: list[dict], parts: int = 1) -> list[str]:
    with storage.publishing(out, f"{TOKENS}/{split}", date) as tmp:
        for p in range(parts):
            storage.write_table(token_table(rows[p::parts]), tmp, f"part-{p:05d}.parquet")
    return shard_files(storage.partition_dir(out, f"{TOKENS}/{split}", date))


def train_rows(histories) -> list[dict]:
    return [{"subject_id": f"u{i}", "input_ids": history_sequence(h)} for i, h in enumerate(histories)]


def valid_rows(histories) -> list[dict]:
    return [
        {
            "subject_id": f"u{i}",
            "input_ids": history_prompt(h[:-1]),
            "target_item": "x",
            "target_id": h[-1],
            "history_ids": h[:-1],
        }
        for i, h in enumerate(histories)
    ]


def tiny_cfg(**kw) -> TrainConfig:
    base = TrainConfig(
        model=ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.1),
        batch_size=8,
        max_steps=40,
        warmup_steps=4,
        lr=1e-2,
        min_lr=1e-3,
        eval_every=0,
        checkpoint_every=0,
        max_minutes=5.0,
        weight_decay=0.0,
        patience=3,
        label_smoothing=0.0,
        mask_seen_items=False,
        ema_decay=0.0,
    )  # plain; tests turn each on
    return replace(base, **kw)


def tiny_model(cfg: TrainConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    m = cfg.model
    return GPT(
        GPTConfig(
            n_text=N_TEXT,
            n_items=N_ITEMS,
            block_size=m.block_size,
            n_layer=m.n_layer,
            n_head=m.n_head,
            n_embd=m.n_embd,
            dropout=m.dropout,
        )
    )


@pytest.fixture
def shards(tmp_path):
    return write_split(tmp_path, "train", "2024-01-01", train_rows(cycle_histories(40, N_ITEMS, N_TEXT)), parts=2)


# ---- schedule ----------------------------------------------------------------------------------
def test_get_lr_corners():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert get_lr(0, cfg) == pytest.approx(1e-4)  # first warmup step: lr / warmup
    assert get_lr(9, cfg) == pytest.approx(1e-3)  # last warmup step reaches lr
    assert get_lr(10, cfg) == pytest.approx(1e-3)  # cosine starts at lr
    assert get_lr(60, cfg) == pytest.approx(5.5e-4)  # half way: the mean of lr and min_lr
    assert get_lr(110, cfg) == pytest.approx(1e-4)  # end of schedule
    assert get_lr(10_000, cfg) == pytest.approx(1e-4)  # past the end stays at min_lr


def test_a_run_the_time_limit_stops_has_decayed_its_learning_rate():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert get_lr(20, cfg, progress=0.5) == pytest.approx(5.5e-4)  # half the time used: half way down
    assert get_lr(20, cfg, progress=1.0) == pytest.approx(1e-4)
    assert get_lr(80, cfg, progress=0.5) == pytest.approx(get_lr(80, cfg))  # steps ahead of time: steps rule
    assert get_lr(5, cfg, progress=0.9) == pytest.approx(6e-4)  # warmup is by steps


# ---- data --------------------------------------------------------------------------------------
def test_pad_right_targets_are_next_tokens_with_ignored_padding():
    import numpy as np

    idx, targets = pad_right([np.array([1, 3, 50, 51]), np.array([1, 3, 52])], block_size=8)
    assert idx.tolist() == [[1, 3, 50], [1, 3, 0]]
    assert targets.tolist() == [[3, 50, 51], [3, 52, -1]]


def test_long_history_keeps_prefix_and_recent_items():
    import numpy as np

    seq = np.array(history_sequence(list(range(100, 120))))
    idx, targets = pad_right([seq], block_size=6)
    assert idx.tolist() == [[1, 3, 116, 117, 118, 119]]
    assert targets.tolist()[0][-1] == 2  # <eos>


def test_stream_is_deterministic_and_ranks_split_each_global_batch(shards):
    full = TokenStream(shards, batch_size=8, block_size=16, seed=3)
    a = [b.idx for _, b in zip(range(7), full)]
    b = [b.idx for _, b in zip(range(7), TokenStream(shards, 8, 16, seed=3))]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[5])  # the second epoch is reshuffled
    halves = [TokenStream(shards, 8, 16, seed=3, rank=r, world_size=2) for r in range(2)]
    for g, r0, r1 in zip(a, *halves):
        assert torch.equal(torch.cat([r0.idx, r1.idx]), g)
    resumed = next(full.iterate(Position(epoch=1, batch=1)))
    assert torch.equal(resumed.idx, a[6])  # 5 batches an epoch: epoch 1, batch 1 is the 7th


# ---- training ----------------------------------------------------------------------------------
def test_loss_falls_and_tiny_set_is_overfit(shards):
    cfg = tiny_cfg(max_steps=120, model=replace(tiny_cfg().model, dropout=0.0))
    model = tiny_model(cfg)
    result = Trainer(model, cfg, TokenStream(shards, 8, 16, seed=0), progress=None).run()
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.5 * first
    # overfit: the cycle rule is learned, every next item is predicted (after <bos> <hist> first item)
    valid = read_eval_rows(
        write_split(
            Path(shards[0]).parents[2].parent / "v",
            "valid",
            "2024-01-01",
            valid_rows(cycle_histories(10, N_ITEMS, N_TEXT, seed=9)),
        )
    )
    metrics = evaluate_rows(model, valid)
    assert metrics["hr@10"] == 1.0 and metrics["mrr"] > 0.95


def test_bf16_on_cpu_and_mask_seen_items_still_learn(shards):
    from jobs.train import loss_kwargs

    cfg = tiny_cfg(max_steps=60, precision="bf16", mask_seen_items=True, model=replace(tiny_cfg().model, dropout=0.0))
    assert loss_kwargs(cfg) == {"mask_seen_items": True}
    bf16 = Trainer(
        tiny_model(cfg), cfg, TokenStream(shards, 8, 16, seed=0), progress=None, loss_kwargs=loss_kwargs(cfg)
    ).run()
    assert sum(bf16.losses[-5:]) < 0.6 * sum(bf16.losses[:5])
    fp32_cfg = replace(cfg, precision="fp32", max_steps=3)
    fp32 = Trainer(
        tiny_model(cfg), fp32_cfg, TokenStream(shards, 8, 16, seed=0), progress=None, loss_kwargs=loss_kwargs(cfg)
    ).run()
    assert fp32.losses[:3] != pytest.approx(bf16.losses[:3], abs=1e-6)  # bf16 really was used


@pytest.mark.gpu
def test_training_on_cuda_learns_and_ranks_as_on_the_cpu(shards):
    """bf16 autocast on CUDA (precision auto): the loss falls; the trained model ranks the same on either device."""
    cfg = tiny_cfg(max_steps=120, model=replace(tiny_cfg().model, dropout=0.0))
    model = tiny_model(cfg)
    result = Trainer(model, cfg, TokenStream(shards, 8, 16, seed=0), device="cuda", progress=None).run()
    assert sum(result.losses[-5:]) < 0.5 * sum(result.losses[:5])
    valid = read_eval_rows(
        write_split(
            Path(shards[0]).parents[2].parent / "v_gpu",
            "valid",
            "2024-01-01",
            valid_rows(cycle_histories(10, N_ITEMS, N_TEXT, seed=9)),
        )
    )
    on_gpu = evaluate_rows(model, valid, device="cuda")
    on_cpu = evaluate_rows(model.to("cpu"), valid)
    assert on_gpu["hr@10"] == on_cpu["hr@10"] and on_gpu["mrr"] == pytest.approx(on_cpu["mrr"], abs=1e-3)


class Killed(Exception):
    pass


class KillAfter:
    """A stream that dies after n batches, like a process killed mid-run."""

    def __init__(self, stream, n):
        self.stream, self.n = stream, n

    def iterate(self, position):
        for i, b in enumerate(self.stream.iterate(position)):
            if i == self.n:
                raise Killed()
            yield b


def test_killed_and_resumed_run_matches_uninterrupted(shards, tmp_path):
    cfg = tiny_cfg(max_steps=16, checkpoint_every=5)  # dropout on: RNG state must be restored too
    full = Trainer(
        tiny_model(cfg), cfg, TokenStream(shards, 8, 16), checkpoint_path=tmp_path / "a.pt", progress=None
    ).run()
    ck = tmp_path / "b.pt"
    with pytest.raises(Killed):
        Trainer(
            tiny_model(cfg), cfg, KillAfter(TokenStream(shards, 8, 16), 13), checkpoint_path=ck, progress=None
        ).run()
    assert torch.load(ck, weights_only=True)["step"] == 10
    resumed_trainer = Trainer(
        tiny_model(cfg, seed=99), cfg, TokenStream(shards, 8, 16), checkpoint_path=ck, progress=None
    )
    resumed = resumed_trainer.run()
    assert resumed.resumed_from == 10 and len(resumed.losses) == 16
    assert resumed.losses == pytest.approx(full.losses, abs=1e-5)


def test_killed_and_resumed_run_on_s3_matches_uninterrupted(s3):
    """Shards streamed from S3, the checkpoint written to and resumed from S3 (one object, no local file)."""
    files = write_split("s3://shop/x", "train", "2024-01-01", train_rows(cycle_histories(40, N_ITEMS, N_TEXT)), 2)
    assert all(f.startswith("s3://shop/x/tokens/train/dt=2024-01-01/_attempts/") for f in files)
    cfg = tiny_cfg(max_steps=16, checkpoint_every=5)
    full = Trainer(tiny_model(cfg), cfg, TokenStream(files, 8, 16), progress=None).run()
    ck = "s3://shop/x/checkpoints/dt=2024-01-01/train.pt"
    with pytest.raises(Killed):
        Trainer(tiny_model(cfg), cfg, KillAfter(TokenStream(files, 8, 16), 13), checkpoint_path=ck, progress=None).run()
    assert s3.keys("shop", "x/checkpoints/") == ["x/checkpoints/dt=2024-01-01/train.pt"]
    assert torch.load(io.BytesIO(storage.read_bytes(ck)), weights_only=True)["step"] == 10
    resumed = Trainer(tiny_model(cfg, seed=99), cfg, TokenStream(files, 8, 16), checkpoint_path=ck, progress=None).run()
    assert resumed.resumed_from == 10 and resumed.losses == pytest.approx(full.losses, abs=1e-5)


def test_weight_average_is_what_is_evaluated_kept_and_resumed(shards, tmp_path):
    cfg = tiny_cfg(max_steps=16, checkpoint_every=5, ema_decay=0.9, eval_every=8)
    seen = []

    def evaluate(model):
        seen.append(model.wte.weight.detach().clone())
        return {"ndcg@10": float(len(seen))}  # every evaluation is the best so far

    full_model = tiny_model(cfg)
    trainer = Trainer(full_model, cfg, TokenStream(shards, 8, 16), evaluate=evaluate, progress=None)
    trainer.run()
    assert torch.equal(full_model.wte.weight, trainer.state.ema["wte.weight"])  # the kept weights: the average
    assert torch.equal(seen[-1], trainer.state.ema["wte.weight"])
    raw = tiny_model(cfg)
    Trainer(raw, replace(cfg, ema_decay=0.0), TokenStream(shards, 8, 16), progress=None).run()
    assert not torch.allclose(raw.wte.weight, full_model.wte.weight, atol=1e-4)

    ck = tmp_path / "ema.pt"
    with pytest.raises(Killed):
        Trainer(
            tiny_model(cfg),
            cfg,
            KillAfter(TokenStream(shards, 8, 16), 13),
            evaluate=evaluate,
            checkpoint_path=ck,
            progress=None,
        ).run()
    resumed = tiny_model(cfg, seed=99)
    Trainer(resumed, cfg, TokenStream(shards, 8, 16), evaluate=evaluate, checkpoint_path=ck, progress=None).run()
    assert torch.allclose(resumed.wte.weight, full_model.wte.weight, atol=1e-6)


def test_checkpoint_loads_without_pickle(shards, tmp_path):
    cfg = tiny_cfg(max_steps=3)
    Trainer(tiny_model(cfg), cfg, TokenStream(shards, 8, 16), checkpoint_path=tmp_path / "c.pt", progress=None).run()
    ck = torch.load(tmp_path / "c.pt", weights_only=True)
    assert {"model", "optimizer", "step", "rng", "position", "best"} <= set(ck)
    assert ck["step"] == 3 and ck["done"] is True
    assert isinstance(ck["rng"]["torch"], torch.Tensor)


def test_early_stopping_keeps_the_best_weights(shards):
    cfg = tiny_cfg(max_steps=100, eval_every=2, patience=2)
    scores = iter([0.1, 0.3, 0.2, 0.25, 0.9])
    snapshots = []

    def evaluate(model):
        snapshots.append(model.wte.weight.detach().clone())
        return {"ndcg@10": next(scores)}

    model = tiny_model(cfg)
    result = Trainer(model, cfg, TokenStream(shards, 8, 16), evaluate=evaluate, progress=None).run()
    assert result.stopped_early and result.steps == 8 and result.best_step == 4
    assert torch.equal(model.wte.weight, snapshots[1])
    assert [r["ndcg@10"] for r in result.curve] == [0.1, 0.3, 0.2, 0.25]


def test_best_weights_live_on_disk_and_survive_a_kill(shards, tmp_path):
    """The best evaluated weights are a file beside the checkpoint, not a copy in memory; a run killed after
    the best evaluation and resumed from an older checkpoint still ends on them."""
    cfg = tiny_cfg(max_steps=12, eval_every=2, checkpoint_every=5, patience=100)
    scores = {2: 0.1, 4: 0.5, 6: 0.2, 8: 0.3, 10: 0.1, 12: 0.2}  # step 4 is the best

    def trainer(model, stream, ck):
        holder = []
        t = Trainer(model, cfg, stream, evaluate=lambda m: {"ndcg@10": scores[holder[0].state.step]},
                    checkpoint_path=ck, progress=None)  # fmt: skip
        holder.append(t)
        return t

    full = tiny_model(cfg)
    trainer(full, TokenStream(shards, 8, 16), tmp_path / "full" / "train.pt").run()
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["best-4.pt", "train.pt"]

    ck = tmp_path / "killed" / "train.pt"
    with pytest.raises(Killed):
        trainer(tiny_model(cfg), KillAfter(TokenStream(shards, 8, 16), 7), ck).run()  # after step 6's evaluation
    assert torch.load(ck, weights_only=True)["best"]["step"] == 4  # the checkpoint of step 5
    resumed = tiny_model(cfg, seed=99)
    result = trainer(resumed, TokenStream(shards, 8, 16), ck).run()
    assert result.resumed_from == 5 and result.best_step == 4
    assert torch.equal(resumed.wte.weight, full.wte.weight)


# ---- DDP ---------------------------------------------------------------------------------------
def _ddp_worker(rank, world, init_file, shards, result_file):
    import torch.distributed as dist

    from jobs.train import teardown_distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    cfg = tiny_cfg(max_steps=6, model=replace(tiny_cfg().model, dropout=0.0))
    model = tiny_model(cfg)
    stream = TokenStream(shards, 8, 16, rank=rank, world_size=world)
    result = Trainer(model, cfg, stream, progress=None).run()
    if rank == 0:
        torch.save({"losses": result.losses, "state": model.state_dict()}, result_file)
    teardown_distributed()


def test_two_process_gloo_ddp_matches_one_process(shards, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), shards, str(tmp_path / "ddp.pt")), nprocs=2)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    cfg = tiny_cfg(max_steps=6, model=replace(tiny_cfg().model, dropout=0.0))
    model = tiny_model(cfg)
    single = Trainer(model, cfg, TokenStream(shards, 8, 16), progress=None).run()
    assert ddp["losses"] == pytest.approx(single.losses, abs=1e-5)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ddp["state"][k], v, atol=1e-5, rtol=1e-4)


def _ddp_resume_worker(rank, world, init_file, shards, folder):
    """Uninterrupted, then killed after 5 steps and resumed: dropout on, so each rank's RNG must come back."""
    import torch.distributed as dist

    from jobs.train import teardown_distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    cfg = tiny_cfg(max_steps=8, checkpoint_every=3)

    def trainer(stream, ck):
        return Trainer(tiny_model(cfg), cfg, stream, checkpoint_path=f"{folder}/{ck}", progress=None)

    full = trainer(TokenStream(shards, 8, 16, rank=rank, world_size=world), "full.pt").run()
    with contextlib.suppress(Killed):
        trainer(KillAfter(TokenStream(shards, 8, 16, rank=rank, world_size=world), 5), "killed.pt").run()
    resumed = trainer(TokenStream(shards, 8, 16, rank=rank, world_size=world), "killed.pt").run()
    refused = ""
    try:  # rank 1 cannot see rank 0's checkpoint (node-local disks): every rank refuses to train
        trainer(TokenStream(shards, 8, 16, rank=rank, world_size=world), "killed.pt" if rank == 0 else "no.pt").run()
    except ShopllmError as e:
        refused = str(e)
    if rank == 0:
        r = {"full": full.losses, "resumed": resumed.losses, "from": resumed.resumed_from, "refused": refused}
        torch.save(r, f"{folder}/r.pt")
    teardown_distributed()


def test_two_process_ddp_resume_restores_every_ranks_random_state(shards, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_resume_worker, args=(2, str(tmp_path / "init"), shards, str(tmp_path)), nprocs=2)
    r = torch.load(tmp_path / "r.pt", weights_only=True)
    assert r["from"] == 3 and r["resumed"] == pytest.approx(r["full"], abs=1e-5)
    assert "different checkpoints (steps 0 to 8)" in r["refused"]


# ---- the job -----------------------------------------------------------------------------------
def shop_out(out: Path | str, date: str, n_items: int, tokenizer: TextTokenizer | None = None) -> TextTokenizer:
    """tokenizer, item vocabulary and token shards as the prepare stage leaves them (out: a folder or a URI)."""
    tk = tokenizer or TextTokenizer.train(["wireless earbuds", "蓝牙 耳机", "a red cotton shirt"] * 5, vocab_size=300)
    vocab = storage.join(str(out), "vocab")
    tk.save(storage.join(vocab, "tokenizer.json"))
    items = ItemVocab.load_or_empty(vocab)
    items.extend(f"item{i:03d}" for i in range(n_items))
    items.save(vocab)
    hist = cycle_histories(48, n_items, tk.n_text, seed=1)
    write_split(out, "train", date, train_rows(hist))
    write_split(out, "valid", date, valid_rows(cycle_histories(12, n_items, tk.n_text, seed=2)))
    return tk


def write_config(path: Path, **train) -> str:
    lines = ["[train]"] + [f"{k} = {json.dumps(v)}" for k, v in train.items()]
    lines += ["[train.model]", "n_layer = 2", "n_head = 2", "n_embd = 32", "block_size = 16", "dropout = 0.0"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_train_job_saves_model_summary_and_warm_starts(tmp_path):
    from jobs.train import main

    out = tmp_path / "out"
    tk = shop_out(out, "2024-01-01", n_items=10)
    conf = write_config(
        tmp_path / "c.toml",
        batch_size=8,
        max_steps=30,
        warmup_steps=3,
        eval_every=10,
        checkpoint_every=10,
        lr=0.01,
        min_lr=0.001,
        log_every=10,
    )
    assert main(["--out", str(out), "--date", "2024-01-01", "--config", conf, "--device", "cpu"]) == 0
    loaded = modelstore.load(out, "v2024-01-01")
    assert loaded.model.config.n_items == 10 and len(loaded.items) == 10
    assert modelstore.latest_version(out) is None  # training never moves LATEST
    summary = storage.read_json(storage.summary_path(out, "2024-01-01", "train"))
    assert summary["steps"] == 30 and summary["warm_started"] is False
    assert summary["best_valid_ndcg@10"] > 0.5 and len(summary["ndcg_curve"]) == 3
    evals = (out / "checkpoints" / "dt=2024-01-01" / "evals.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in evals] == [10, 20, 30]

    modelstore.set_latest(out, "v2024-01-01")
    shop_out(out, "2024-01-02", n_items=13, tokenizer=tk)  # three new items
    assert main(["--out", str(out), "--date", "2024-01-02", "--config", conf, "--max-steps", "5"]) == 0
    summary = storage.read_json(storage.summary_path(out, "2024-01-02", "train"))
    assert summary["warm_started"] is True and summary["warm_start_from"] == "v2024-01-01"
    assert modelstore.load(out, "v2024-01-02").model.config.n_items == 13


def test_train_job_without_tokens_fails_with_one_clear_line(tmp_path, capsys):
    from jobs.train import main

    out = tmp_path / "out"
    TextTokenizer.train(["a b c"], vocab_size=100).save(out / "vocab" / "tokenizer.json")
    assert main(["--out", str(out), "--date", "2024-01-01"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tokens/train/dt=2024-01-01" in err[0]


class KilledStream(TokenStream):
    """The job's token stream, dying after 7 batches (the job is killed between two checkpoints)."""

    def iterate(self, start):
        return KillAfter(TokenStream(self.files, self.batch_size, self.block_size, seed=self.seed), 7).iterate(start)


def test_train_job_on_s3_killed_and_rerun_resumes_to_the_uninterrupted_result(s3, tmp_path, monkeypatch):
    """`shopllm train --out s3://…`: every file through the storage layer; a killed run's rerun resumes from
    the checkpoint on S3 and ends as a run that was never killed: same losses, curve and saved model."""
    from jobs.train import main

    date = "2024-01-01"
    conf = write_config(tmp_path / "c.toml", batch_size=8, max_steps=12, warmup_steps=2, eval_every=4,
                        checkpoint_every=5, lr=0.01, min_lr=0.001, log_every=4)  # fmt: skip
    tk = shop_out("s3://shop/full", date, n_items=10)
    shop_out("s3://shop/x", date, n_items=10, tokenizer=tk)

    def train(out: str) -> int:
        return main(["--out", out, "--date", date, "--config", conf, "--device", "cpu", *s3.flags])

    assert train("s3://shop/full") == 0
    monkeypatch.setattr("jobs.train.TokenStream", KilledStream)
    with pytest.raises(Killed):
        train("s3://shop/x")
    assert not modelstore.exists("s3://shop/x", "v2024-01-01")
    monkeypatch.undo()
    assert train("s3://shop/x") == 0

    full, resumed = (
        storage.read_json(storage.summary_path(o, date, "train")) for o in ("s3://shop/full", "s3://shop/x")
    )
    assert full["resumed_from_step"] is None and resumed["resumed_from_step"] == 5
    assert [v for _, v in resumed["loss_curve"]] == pytest.approx([v for _, v in full["loss_curve"]], abs=1e-5)
    assert [r["step"] for r in resumed["eval_curve"]] == [4, 8, 12]
    assert resumed["best_selection_score"] == pytest.approx(full["best_selection_score"], abs=1e-6)
    evals = storage.read_text(f"s3://shop/x/checkpoints/dt={date}/evals.jsonl").splitlines()
    assert [json.loads(line)["step"] for line in evals] == [4, 8, 12]  # each evaluation once
    last = [torch.load(io.BytesIO(storage.read_bytes(f"{o}/checkpoints/dt={date}/train.pt")), weights_only=True)
            for o in ("s3://shop/full", "s3://shop/x")]  # fmt: skip
    for k, v in last[0]["model"].items():
        torch.testing.assert_close(last[1]["model"][k], v, atol=1e-5, rtol=1e-4)
    a, b = modelstore.load("s3://shop/full", "v2024-01-01"), modelstore.load("s3://shop/x", "v2024-01-01")
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[k], v, atol=1e-5, rtol=1e-4)
    assert storage.is_published("s3://shop/x/models/v2024-01-01") and b.tokenizer_path.startswith("s3://shop/x/")

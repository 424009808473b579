"""Trainer throughput beside a bare torch loop over the same model and batches, in the same run.

    .venv/bin/python -m benchmarks.train_bench [--quick] [--preset cpu-demo|gpu-100m] [--device cpu|cuda]

The trainer streams its batches from Parquet shards itself (that is part of its job); the bare loop
gets the very same batches already in memory and does only forward, backward, clip and AdamW. Both
start from the same initial weights. Runs alternate (bare, trainer, bare, trainer, ...) and the best
of each is kept, so load from other processes hurts both alike. Tokens are real (non-padding)
target tokens. On CUDA both use bf16 autocast, and MFU = flops_per_token * tokens/s / 989e12 (H200
dense bf16 peak), with `GPT.flops_per_token` counting the output rows each target is really scored over.
"""

from __future__ import annotations

import os

from shopllm.threads import openmp_wait_policy

os.environ.update(openmp_wait_policy(os.environ))  # as every entry point does, before torch loads

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from shopllm import storage
from shopllm.config import ModelConfig, TrainConfig
from shopllm.data import TokenStream, shard_files
from shopllm.model import GPT, GPTConfig
from shopllm.schemas import TOKENS_SCHEMA
from shopllm.sequences import history_sequence
from shopllm.trainer import Trainer, get_lr

H200_BF16_PEAK = 989e12

PRESETS = {
    # the nightly demo's shape: 8k text tokens, 2k items, the default small model
    "cpu-demo": dict(
        n_text=8000,
        n_items=2000,
        model=ModelConfig(n_layer=2, n_head=4, n_embd=128, block_size=64, dropout=0.1),
        batch_size=64,
        steps=30,
    ),
    # ~100M parameters for a GPU: 12 layers, 768 wide
    "gpu-100m": dict(
        n_text=32000,
        n_items=20000,
        model=ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=512, dropout=0.0),
        batch_size=32,
        steps=40,
    ),
}


def write_shards(folder: Path, n_text: int, n_items: int, rows: int, max_len: int, seed: int = 0) -> list[str]:
    """Random histories of 50..100% of the block (padding present, as in real batches)."""
    rng = np.random.default_rng(seed)
    data = []
    for r in range(rows):
        n = int(rng.integers(max(2, max_len // 2), max_len - 2))
        items = (n_text + rng.integers(0, n_items, n)).tolist()
        data.append(
            {
                "kind": "history",
                "subject_id": f"u{r}",
                "input_ids": history_sequence(items),
                "target_item": None,
                "target_id": -1,
                "history_ids": [],
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    storage.write_table(pa.Table.from_pylist(data, schema=TOKENS_SCHEMA), folder)
    return shard_files(folder)


def bare_loop(model, batches, cfg: TrainConfig, device: str) -> float:
    """tokens/s of the plainest loop: the same loss, clip and AdamW settings, no trainer."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=device.startswith("cuda"),
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else None
    model.train()
    sync(device)
    t = time.perf_counter()
    tokens = 0
    for step, (idx, targets) in enumerate(batches):
        for g in opt.param_groups:
            g["lr"] = get_lr(step, cfg)
        idx, targets = idx.to(device), targets.to(device)
        if autocast is not None:
            with autocast:
                _, loss = model(idx, targets)
        else:
            _, loss = model(idx, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int((targets >= 0).sum())
    sync(device)
    return tokens / (time.perf_counter() - t)


def trainer_run(model, files, cfg: TrainConfig, device: str) -> float:
    stream = TokenStream(files, cfg.batch_size, model.config.block_size, seed=cfg.seed)
    result = Trainer(model, cfg, stream, device=device, progress=None).run(resume=False)
    return result.tokens_per_s


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu-demo")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--steps", type=int, help="optimizer steps per timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each (best kept)")
    p.add_argument("--quick", action="store_true", help="smoke size: few steps, one repeat")
    p.add_argument("--json", default="bench_out/train_bench.json")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here", file=sys.stderr)
        return 2
    preset = PRESETS[args.preset]
    steps = args.steps or (5 if args.quick else preset["steps"])
    repeats = 1 if args.quick else args.repeats
    mc: ModelConfig = preset["model"]
    cfg = TrainConfig(
        model=mc,
        batch_size=preset["batch_size"],
        max_steps=steps,
        warmup_steps=2,
        eval_every=0,
        checkpoint_every=0,
        max_minutes=60.0,
        log_every=10**9,
        ema_decay=0.0,  # the bare loop keeps no weight average
    )
    gcfg = GPTConfig.of(mc, preset["n_text"], preset["n_items"])
    torch.manual_seed(0)
    init = GPT(gcfg).state_dict()

    def fresh() -> GPT:
        m = GPT(gcfg)
        m.load_state_dict(init)
        return m.to(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        files = write_shards(
            Path(tmp), gcfg.n_text, gcfg.n_items, rows=cfg.batch_size * steps, max_len=mc.block_size + 1
        )
        batches = [
            (b.idx, b.targets)
            for _, b in zip(range(steps), TokenStream(files, cfg.batch_size, mc.block_size, seed=cfg.seed))
        ]
        bare_loop(fresh(), batches[:2], replace(cfg, max_steps=2), args.device)  # warm up kernels and caches
        bare, trainer = [], []
        for _ in range(repeats):
            bare.append(bare_loop(fresh(), batches, cfg, args.device))
            trainer.append(trainer_run(fresh(), files, cfg, args.device))
    model = GPT(gcfg)
    targets = torch.cat([t[t >= 0] for _, t in batches])
    item_share = float((targets >= gcfg.n_text).float().mean()) if len(targets) else 1.0  # the rest: <hist>, <eos>
    fpt = model.flops_per_token(item_share)
    best_bare, best_trainer = max(bare), max(trainer)
    ratio = best_trainer / best_bare
    print(
        f"preset {args.preset} on {args.device} ({torch.get_num_threads()} threads): "
        f"{model.num_params() / 1e6:.1f}M params, batch {cfg.batch_size} x block {mc.block_size}, "
        f"{steps} steps x {repeats} runs"
    )
    print(f"{'loop':10s} {'tokens/s':>12s} {'ratio':>7s}" + (f" {'MFU':>7s}" if args.device == "cuda" else ""))
    for name, tps in (("bare", best_bare), ("trainer", best_trainer)):
        mfu = f" {fpt * tps / H200_BF16_PEAK:7.1%}" if args.device == "cuda" else ""
        print(f"{name:10s} {tps:12,.0f} {tps / best_bare:7.3f}{mfu}")
    print(f"trainer / bare = {ratio:.3f} (target >= 0.95)")
    out = {
        "preset": args.preset,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "repeats": repeats,
        "params": model.num_params(),
        "flops_per_token": fpt,
        "item_target_share": item_share,
        "bare_tokens_per_s": bare,
        "trainer_tokens_per_s": trainer,
        "ratio": ratio,
        "quick": args.quick,
    }
    if args.device == "cuda":
        out["mfu_trainer"] = fpt * best_trainer / H200_BF16_PEAK
        out["mfu_bare"] = fpt * best_bare / H200_BF16_PEAK
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

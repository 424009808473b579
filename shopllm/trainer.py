"""A small trainer that does not know the model (minGPT style).

It needs only `model(idx, targets, **loss_kwargs) -> (logits, loss)` with the mean loss over the
targets that are not -1 (nanoGPT's signature; the logits are not used), a stream of
`shopllm.data.Batch`, and optionally an `evaluate(model) -> dict` callback whose `score_key`
(ndcg@10) drives early stopping. Under torchrun (an initialised
process group) the model is wrapped in DDP and each rank trains on its slice of every global batch.

Checkpoints hold everything a resumed run needs to continue exactly where the killed one stopped:
weights, optimizer, step, RNG states, stream position, the step of the best weights so far and the curves.
They contain only tensors and plain types, so they load with `torch.load(weights_only=True)`. The best
weights are not held in memory beside the model: each new best goes to `best-<step>.pt` next to the
checkpoint (a temporary folder without one), and the one a checkpoint names is kept until the next
checkpoint, so a resumed run finds the best weights its checkpoint knew. Checkpoints and the
evaluation log are paths or URIs written through `shopllm.storage` (whole-object writes, so they work on
object storage), by rank 0 only.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn as nn

from shopllm import storage
from shopllm.config import TrainConfig
from shopllm.data import Batch, Position
from shopllm.errors import ShopllmError
from shopllm.progress import Progress, on_terminal

log = logging.getLogger(__name__)


def get_lr(step: int, cfg: TrainConfig, progress: float = 0.0) -> float:
    """Learning rate at `step` (0-based): linear warmup to cfg.lr over warmup_steps, then a cosine
    down to cfg.min_lr at cfg.max_steps, and cfg.min_lr after that. `progress` (0..1, the share of the time
    limit used; see Trainer.run) moves the cosine further when it is ahead of the steps, so a run that the
    time limit stops has decayed all the same."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    ratio = max((step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps), progress)
    if ratio >= 1.0:
        return cfg.min_lr
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: str = "cpu") -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D weights only (matrices and embeddings; not norms or biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = torch.device(device).type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=fused)


@dataclass
class TrainResult:
    steps: int
    tokens: int  # target tokens trained on, all ranks
    wall_s: float  # wall time of this process's loop
    tokens_per_s: float
    losses: list[float]  # training loss per step, from step 0 (a resumed run includes the old steps)
    curve: list[dict]  # one dict per evaluation
    best_score: float | None
    best_step: int | None
    stopped_early: bool
    resumed_from: int | None = None


@dataclass
class _State:
    step: int = 0
    position: Position = field(default_factory=Position)
    tokens: int = 0
    losses: list[float] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)
    best_score: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    ema: dict | None = None  # exponential moving average of the weights (cfg.ema_decay > 0)
    schedule: float = 0.0  # share of the time limit used (a resumed run goes on from here), see get_lr
    done: bool = False
    stopped_early: bool = False


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        stream: Iterable[Batch] | object,
        *,
        evaluate: Callable[[nn.Module], dict] | None = None,
        score_key: str = "ndcg@10",
        checkpoint_path: str | os.PathLike | None = None,
        metrics_path: str | os.PathLike | None = None,
        device: str = "cpu",
        loss_kwargs: dict | None = None,
        log_every: int = 20,
        progress=sys.stderr,
        fingerprint: str = "",
    ):
        self.model = model.to(device)
        self.cfg = cfg
        self.stream = stream
        self.evaluate = evaluate
        self.score_key = score_key
        self.checkpoint_path = os.fspath(checkpoint_path) if checkpoint_path else None
        self.metrics_path = os.fspath(metrics_path) if metrics_path else None
        self._scratch = None if self.checkpoint_path else tempfile.TemporaryDirectory(prefix="shopllm-best-")
        self.device = device
        self.loss_kwargs = loss_kwargs or {}
        self.log_every = log_every
        self.progress = progress
        self._bar: Progress | None = None  # while run() trains
        self.fingerprint = fingerprint
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        self.optimizer = make_optimizer(self.model, cfg, device)
        self.state = _State()
        self.resumed_from: int | None = None
        self.is_cuda = torch.device(device).type == "cuda"
        self.forward = self.model
        if self.distributed:  # DDP syncs gradients through forward
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.forward = DDP(self.model, device_ids=[torch.device(device).index] if self.is_cuda else None)

    # ---- checkpoints ----------------------------------------------------------------------------
    def _rng_state(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.is_cuda:
            rng["cuda"] = torch.cuda.get_rng_state(torch.device(self.device))
        return rng

    def _rng_states(self) -> list[dict]:
        """Every rank's RNG states, in rank order (a collective: every rank calls it). Each rank draws its own
        dropout masks, so an exact resume restores each rank's own state."""
        if not self.distributed:
            return [self._rng_state()]
        states: list = [None] * self.world_size
        dist.all_gather_object(states, self._rng_state())
        return states

    def checkpoint(self, rng_ranks: list[dict] | None = None) -> dict:
        """Everything an exact resume needs; `rng_ranks` every rank's RNG states (save_checkpoint gathers them)."""
        s = self.state
        rng_ranks = rng_ranks or [self._rng_state()]
        return {
            "fingerprint": self.fingerprint,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": s.step,
            "position": [s.position.epoch, s.position.batch],
            "tokens": s.tokens,
            "rng": rng_ranks[0],
            "rng_ranks": rng_ranks,
            "losses": list(s.losses),
            "curve": json.dumps(s.curve),  # a string: evaluation dicts may hold any JSON value
            "best": {"score": s.best_score, "step": s.best_step, "bad_evals": s.bad_evals},
            "ema": s.ema,
            "schedule": s.schedule,
            "done": s.done,
            "stopped_early": s.stopped_early,
        }

    def save_checkpoint(self) -> None:
        """Every rank calls it (it gathers the ranks' RNG states); rank 0 alone writes the checkpoint, whole,
        in one atomic write (a rename locally, one PUT on object storage)."""
        if self.checkpoint_path is None:
            return
        rng_ranks = self._rng_states()
        if self.rank != 0:
            return
        ckpt = self.checkpoint(rng_ranks)
        storage.write_bytes(self.checkpoint_path, storage.bytes_of(lambda f: torch.save(ckpt, f)))
        self._drop_old_best()

    # ---- the best weights, on disk --------------------------------------------------------------
    def _best_folder(self) -> str:
        return self._scratch.name if self._scratch is not None else storage.parent(self.checkpoint_path)

    @staticmethod
    def _best_name(step: int) -> str:
        return f"best-{step}.pt"

    def _best_path(self, step: int) -> str:
        return storage.join(self._best_folder(), self._best_name(step))

    def _save_best(self, weights: dict) -> None:
        """Rank 0 writes them next to the checkpoint; without one, every rank into its own temporary folder."""
        if self.rank == 0 or self._scratch is not None:
            cpu = {k: v.detach().cpu() for k, v in weights.items()}
            storage.write_bytes(self._best_path(self.state.best_step), storage.bytes_of(lambda f: torch.save(cpu, f)))

    def _load_best(self) -> bool:
        if self.state.best_step is None:
            return False
        data = storage.read_bytes(self._best_path(self.state.best_step))
        self.model.load_state_dict(torch.load(io.BytesIO(data), map_location=self.device, weights_only=True))
        return True

    def _drop_old_best(self) -> None:
        """Every best-<step>.pt but the one the state names (the checkpoint just written names it too)."""
        keep = None if self.state.best_step is None else self._best_name(self.state.best_step)
        for f in storage.list_files(self._best_folder(), recursive=False):
            name = f.rsplit("/", 1)[-1]
            if name.startswith("best-") and name.endswith(".pt") and name != keep:
                storage.delete(f)

    def _read_checkpoint(self, path: str | os.PathLike | None) -> dict | None:
        path = os.fspath(path) if path else self.checkpoint_path
        try:
            data = storage.read_bytes(path) if path else None
        except FileNotFoundError:
            data = None
        if data is None:
            return None
        ck = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if ck.get("fingerprint", "") != self.fingerprint:
            log.warning("checkpoint %s is from other data or settings; starting fresh", path)
            return None
        return ck

    def resumable(self, path: str | os.PathLike | None = None) -> bool:
        return self._read_checkpoint(path) is not None

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> bool:
        """Restore a checkpoint if one exists and matches this run's fingerprint; True if resumed."""
        ck = self._read_checkpoint(path)
        if ck is None:
            return False
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        best = ck["best"]
        self.state = _State(
            step=int(ck["step"]),
            position=Position(*ck["position"]),
            tokens=int(ck["tokens"]),
            losses=list(ck["losses"]),
            curve=json.loads(ck["curve"]),
            best_score=best["score"],
            best_step=best["step"],
            bad_evals=int(best["bad_evals"]),
            done=bool(ck["done"]),
            stopped_early=bool(ck["stopped_early"]),
            schedule=float(ck.get("schedule", 0.0)),
            ema=None if ck.get("ema") is None else {k: v.to(self.device) for k, v in ck["ema"].items()},
        )
        ranks = ck.get("rng_ranks") or []
        rng = ranks[self.rank] if len(ranks) == self.world_size else ck["rng"]  # else another world size: rank 0's
        torch.set_rng_state(rng["torch"])
        if self.is_cuda and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], torch.device(self.device))
        self.resumed_from = self.state.step
        return True

    def _agree_on_start(self) -> None:
        """Every rank starts from the same step; one that found no checkpoint (a --out that not every node
        reads: node-local disks) would otherwise train from other weights, so every rank stops, saying why."""
        if not self.distributed:
            return
        steps = torch.tensor([self.state.step, -self.state.step], dtype=torch.int64, device=self.device)
        dist.all_reduce(steps, op=dist.ReduceOp.MAX)
        hi, lo = int(steps[0]), -int(steps[1])
        if hi != lo:
            raise ShopllmError(
                f"the ranks found different checkpoints (steps {lo} to {hi}): {self.checkpoint_path} must be on "
                "storage every node reads (s3://…, a shared filesystem)"
            )

    # ---- the loop -------------------------------------------------------------------------------
    def _autocast(self):
        precision = self.cfg.precision
        if precision == "bf16" or (precision == "auto" and self.is_cuda):
            return torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, batch: Batch, lr: float) -> torch.Tensor:
        """One optimizer step on this rank's slice; returns the global batch's mean loss (a 0-d tensor,
        left on the device so a GPU is not made to wait for it every step)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        idx = batch.idx.to(self.device, non_blocking=True)
        targets = batch.targets.to(self.device, non_blocking=True)
        local_tokens = int((batch.targets >= 0).sum())
        with self._autocast():
            _, loss = self.forward(idx, targets, **self.loss_kwargs)
        # DDP averages gradients over ranks; weighting by this rank's share of the global batch's
        # tokens makes that average the gradient of the global batch's mean loss.
        scaled = loss * (local_tokens * self.world_size / max(1, batch.global_tokens))
        scaled.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._update_ema()
        report = scaled.detach() / self.world_size
        if self.distributed:
            dist.all_reduce(report)
        return report

    @torch.no_grad()
    def _update_ema(self) -> None:
        """ema <- ema + (1 - d) (weights - ema), with d = min(ema_decay, (1 + step) / (10 + step)) so the
        average is not dominated by the random initial weights early on."""
        decay = self.cfg.ema_decay
        if decay <= 0:
            return
        current = self.model.state_dict()
        if self.state.ema is None:
            self.state.ema = {k: v.detach().clone() for k, v in current.items()}
            return
        d = min(decay, (1 + self.state.step) / (10 + self.state.step))
        keys = [k for k, v in current.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.state.ema[k] for k in keys], [current[k] for k in keys], 1.0 - d)

    @contextlib.contextmanager
    def _ema_weights(self):
        """Evaluate with the averaged weights when there are any, then put the trained ones back."""
        if self.state.ema is None:
            yield
            return
        trained = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.state.ema)
        try:
            yield
        finally:
            self.model.load_state_dict(trained)

    def _should_stop(self, local_stop: bool, schedule: float) -> tuple[bool, float]:
        """Every rank stops together (a time limit could otherwise trip on one rank only) and follows the
        same learning-rate schedule (the furthest rank's)."""
        if not self.distributed:
            return local_stop, schedule
        flags = torch.tensor([1.0 if local_stop else 0.0, schedule], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0].item()), float(flags[1].item())

    def run(self, max_steps: int | None = None, max_minutes: float | None = None, resume: bool = True) -> TrainResult:
        """Train until cfg.max_steps (or `max_steps`, for a run cut short on purpose), the time limit
        or early stopping; then load the best evaluated weights into the model."""
        cfg = self.cfg
        limit_steps = cfg.max_steps if max_steps is None else min(max_steps, cfg.max_steps)
        limit_s = 60.0 * (cfg.max_minutes if max_minutes is None else max_minutes)
        if resume and self.load_checkpoint():
            self._write_curve()  # the evaluation log as the checkpoint has it (a killed run may have logged more)
        else:
            torch.manual_seed(cfg.seed + self.rank)  # dropout masks; each rank its own
        self._agree_on_start()
        s = self.state
        self.model.train()
        start = time.perf_counter()
        start_tokens = s.tokens
        window_t, window_tokens = start, 0
        batches = self.stream.iterate(s.position) if hasattr(self.stream, "iterate") else iter(self.stream)
        evaluated_at = s.curve[-1]["step"] if s.curve else None
        pending: list[torch.Tensor] = []  # losses not yet read back from the device
        # on a terminal a bar with rate and ETA; elsewhere (cron, Airflow) a line every log_every steps
        on_tty = self.rank == 0 and self.progress is not None and on_terminal(self.progress)
        self._bar = Progress("train", limit_steps, "steps", stream=self.progress, bar=True) if on_tty else None
        first_step, first_schedule = s.step, s.schedule
        if self._bar is not None:
            self._bar.done = s.step
        try:
            while not s.done and s.step < limit_steps:
                batch = next(batches)
                lr = get_lr(s.step, cfg, s.schedule)
                pending.append(self.train_step(batch, lr))
                s.step += 1
                s.position = batch.position
                s.tokens += batch.global_tokens
                window_tokens += batch.global_tokens
                log_now = s.step % self.log_every == 0 or s.step == limit_steps
                eval_now = self.evaluate is not None and cfg.eval_every > 0 and s.step % cfg.eval_every == 0
                ckpt_now = self.checkpoint_path and cfg.checkpoint_every > 0 and s.step % cfg.checkpoint_every == 0
                if log_now or eval_now or ckpt_now or not self.is_cuda:
                    self._flush(pending)
                if self._bar is not None:
                    self._bar.update(1)
                if log_now:
                    now = time.perf_counter()
                    tok_s = window_tokens / max(now - window_t, 1e-9)
                    if self._bar is not None:  # a terminal: the bar says it
                        self._bar.bar.set_postfix(loss=f"{s.losses[-1]:.4f}", lr=f"{lr:.1e}", tok_s=f"{tok_s:,.0f}")
                    else:
                        eta = (limit_steps - s.step) * (now - start) / max(s.step - first_step, 1)
                        self._progress(
                            f"step {s.step}/{limit_steps} loss {s.losses[-1]:.4f} lr {lr:.2e} "
                            f"tok/s {tok_s:,.0f} {now - start:.0f}s, ETA {min(eta, limit_s - (now - start)):.0f}s"
                        )
                    window_t, window_tokens = now, 0
                if eval_now:
                    self._evaluate(s.losses[-1], lr, time.perf_counter() - start)
                    evaluated_at = s.step
                # ranks agree on stopping through a collective; on a GPU only every few steps (it syncs)
                if not self.distributed or s.step % 10 == 0 or log_now or eval_now:
                    used = (time.perf_counter() - start) / limit_s if limit_s > 0 else 1.0
                    out_of_time = used >= 1.0
                    stop, s.schedule = self._should_stop(
                        out_of_time or s.stopped_early,
                        max(s.schedule, first_schedule + (1 - first_schedule) * min(used, 1.0)),
                    )
                    if stop:
                        if out_of_time:
                            self._progress(f"time limit of {limit_s / 60:.1f} min reached at step {s.step}")
                        break
                if ckpt_now:
                    self.save_checkpoint()
        finally:
            if self._bar is not None:
                self._bar.close()
            self._bar = None
        self._flush(pending)
        wall = time.perf_counter() - start
        if self.evaluate is not None and evaluated_at != s.step and s.losses:
            self._evaluate(s.losses[-1], get_lr(max(s.step - 1, 0), cfg, s.schedule), wall)
        if s.step >= cfg.max_steps or s.stopped_early:
            s.done = True
        self.save_checkpoint()
        if self.distributed:
            dist.barrier()
        if not self._load_best() and s.ema is not None:
            self.model.load_state_dict(s.ema)
        trained = s.tokens - start_tokens
        return TrainResult(
            steps=s.step,
            tokens=s.tokens,
            wall_s=wall,
            tokens_per_s=trained / wall if wall > 0 else 0.0,
            losses=list(s.losses),
            curve=list(s.curve),
            best_score=s.best_score,
            best_step=s.best_step,
            stopped_early=s.stopped_early,
            resumed_from=self.resumed_from,
        )

    def _flush(self, pending: list[torch.Tensor]) -> None:
        if not pending:
            return
        values = torch.stack(pending).float().cpu().tolist()
        first = self.state.step - len(values)
        pending.clear()
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise FloatingPointError(f"training loss became {v} at step {first + i}")
        self.state.losses.extend(values)

    def _evaluate(self, loss: float, lr: float, elapsed: float) -> None:
        s = self.state
        with self._ema_weights():  # in full precision: bf16 logits tie, and ties count against the target
            metrics = self.evaluate(self.model)
        self.model.train()
        row = {
            "step": s.step,
            "train_loss": loss,
            "lr": lr,
            "tokens": s.tokens,
            "elapsed_s": round(elapsed, 2),
            **metrics,
        }
        s.curve.append(row)
        score = metrics.get(self.score_key)
        if score is not None and (s.best_score is None or score > s.best_score):
            s.best_score, s.best_step, s.bad_evals = score, s.step, 0
            self._save_best(s.ema if s.ema is not None else self.model.state_dict())
        elif score is not None:
            s.bad_evals += 1
            if s.bad_evals >= self.cfg.patience:
                s.stopped_early = True
                self._progress(f"early stop at step {s.step}: no better {self.score_key} in {s.bad_evals} evaluations")
        shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        self._progress(f"eval step {s.step}: {shown}")
        self._write_curve()

    def _write_curve(self) -> None:
        """Rewrite the evaluation log whole from the curve (object stores have no append; a resumed run's
        log so holds each evaluation once, as its checkpoint does)."""
        if self.metrics_path is not None and self.rank == 0:
            storage.write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.state.curve))

    def _progress(self, line: str) -> None:
        if self.rank == 0 and self.progress is not None:
            if self._bar is not None:
                self._bar.line(line)
            else:
                print(line, file=self.progress, flush=True)

"""Token shards -> padded batches, streamed with pyarrow one shard at a time.

Training batches are right-padded: `idx` holds the tokens, `targets` the next token with -1 on
padding. With causal attention a right-padded row needs no attention mask (real tokens never look
at the padding after them), so training keeps the fast causal kernel.

The order of rows is a pure function of (seed, epoch): each epoch shuffles the order of the shards
and the rows inside each shard. A position in the stream is (epoch, batches done in that epoch), so
a resumed run regenerates the same stream and skips to where it stopped.

Shards are local paths or URIs (s3://…), read through `shopllm.storage`: no shard is copied to local disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import torch

from shopllm import storage
from shopllm.vocab import HIST_ID

IGNORE = -1
# Batches regrouped by length within each run of this many (TokenStream(bucket=...)); 1 = plain shuffle.
BUCKET = 8


def shard_files(folder: str | os.PathLike) -> list[str]:
    """The Parquet shards of a folder: what its commit lists when it is a committed partition, else the
    .parquet files directly in it (a plain local folder, as the benchmarks write)."""
    folder = os.fspath(folder)
    if storage.is_published(folder):
        return storage.committed_files(folder, ".parquet")
    return [f for f in storage.list_files(folder, recursive=False) if f.endswith(".parquet")]


def num_rows(path: str) -> int:
    """Rows of one Parquet shard, from its footer."""
    with storage.open_input(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


def crop(seq: np.ndarray, max_len: int) -> np.ndarray:
    """At most max_len tokens: a history keeps its `<bos> <hist>` prefix and its most recent items,
    any other sequence keeps its head."""
    if len(seq) <= max_len:
        return seq
    if len(seq) > 1 and seq[1] == HIST_ID:
        return np.concatenate([seq[:2], seq[len(seq) - (max_len - 2) :]])
    return seq[:max_len]


def read_sequences(path: str, kinds: Sequence[str] | None = None) -> list[np.ndarray]:
    """input_ids of one shard as int64 arrays (optionally only some kinds), in file order."""
    table = storage.read_table([path], columns=["kind", "input_ids"])
    if kinds is not None:
        keep = np.isin(table.column("kind").to_numpy(zero_copy_only=False), list(kinds))
        table = table.filter(keep)
    col = table.column("input_ids").combine_chunks()
    values = col.values.to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = col.offsets.to_numpy()
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(col))]


def pad_right(seqs: Sequence[np.ndarray], block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences -> (idx (B, T), targets (B, T)); T = longest cropped sequence - 1, at most block_size."""
    seqs = [crop(s, block_size + 1) for s in seqs]
    T = max(max(len(s) for s in seqs) - 1, 1)
    idx = np.zeros((len(seqs), T), dtype=np.int64)
    targets = np.full((len(seqs), T), IGNORE, dtype=np.int64)
    for r, s in enumerate(seqs):
        n = len(s) - 1
        if n <= 0:
            continue
        idx[r, :n] = s[:-1]
        targets[r, :n] = s[1:]
    return torch.from_numpy(idx), torch.from_numpy(targets)


@dataclass(frozen=True)
class Position:
    epoch: int = 0
    batch: int = 0  # global batches already taken from this epoch


@dataclass
class Batch:
    idx: torch.Tensor  # (b, T) this rank's rows
    targets: torch.Tensor  # (b, T)
    global_tokens: int  # target tokens in the whole global batch (every rank's rows)
    position: Position  # where the stream stands after this batch


class TokenStream:
    """Endless, deterministic stream of global batches; each rank keeps a disjoint slice of each.

    Rows of a global batch of size B go to ranks in contiguous chunks (rank r: rows r*B/W..(r+1)*B/W).
    An epoch's last partial batch is dropped unless the epoch holds less than one batch. With
    bucket > 1 each run of `bucket` shuffled batches is re-cut by row length (padding costs compute).
    """

    def __init__(
        self,
        files: Sequence[str],
        batch_size: int,
        block_size: int,
        seed: int = 0,
        kinds: Sequence[str] | None = None,
        rank: int = 0,
        world_size: int = 1,
        bucket: int = BUCKET,
    ):
        if not files:
            raise FileNotFoundError("no token shards to train on")
        if batch_size < world_size:
            raise ValueError(f"batch_size {batch_size} is smaller than the world size {world_size}")
        self.files = list(files)
        self.batch_size = batch_size
        self.block_size = block_size
        self.seed = seed
        self.kinds = kinds
        self.rank = rank
        self.world_size = world_size
        self.bucket = max(1, bucket)
        self.n_rows = sum(self._count(f) for f in self.files)
        if self.n_rows == 0:
            raise ValueError("the token shards hold no training rows")

    def _count(self, path: str) -> int:
        if self.kinds is None:
            return num_rows(path)
        return len(read_sequences(path, self.kinds))

    @property
    def batches_per_epoch(self) -> int:
        return max(1, self.n_rows // self.batch_size)

    def _epoch_rows(self, epoch: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        for f in rng.permutation(len(self.files)):
            seqs = read_sequences(self.files[f], self.kinds)  # one shard in memory at a time
            for r in rng.permutation(len(seqs)):
                yield seqs[r]

    def _epoch_batches(self, epoch: int) -> Iterator[list[np.ndarray]]:
        if self.bucket > 1:
            yield from self._bucketed(self._plain_batches(epoch), np.random.default_rng([self.seed, epoch, 1]))
        else:
            yield from self._plain_batches(epoch)

    def _plain_batches(self, epoch: int) -> Iterator[list[np.ndarray]]:
        buf: list[np.ndarray] = []
        emitted = 0
        for row in self._epoch_rows(epoch):
            buf.append(row)
            if len(buf) == self.batch_size:
                yield buf
                emitted += 1
                buf = []
        if buf and emitted == 0:
            yield buf

    def _bucketed(self, batches: Iterator[list[np.ndarray]], rng) -> Iterator[list[np.ndarray]]:
        """Regroup each run of `bucket` shuffled batches by length (then shuffle their order): rows of
        one batch have similar lengths, so little of each padded batch is padding."""
        pool: list[np.ndarray] = []
        n = 0
        for rows in batches:
            pool.extend(rows)
            n += 1
            if n == self.bucket:
                yield from self._regroup(pool, n, rng)
                pool, n = [], 0
        if pool:
            yield from self._regroup(pool, n, rng)

    def _regroup(self, pool: list[np.ndarray], n: int, rng) -> Iterator[list[np.ndarray]]:
        order = sorted(range(len(pool)), key=lambda i: len(pool[i]))  # stable: ties keep shuffled order
        size = len(pool) // n
        groups = [[pool[i] for i in order[g * size : (g + 1) * size]] for g in range(n)]
        for g in rng.permutation(n):
            yield groups[g]

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate(Position())

    def iterate(self, start: Position) -> Iterator[Batch]:
        epoch, skip = start.epoch, start.batch
        while True:
            done = 0
            for rows in self._epoch_batches(epoch):
                done += 1
                if done <= skip:
                    continue
                yield self._make(rows, Position(epoch, done))
            epoch, skip = epoch + 1, 0

    def _make(self, rows: list[np.ndarray], position: Position) -> Batch:
        idx, targets = pad_right(rows, self.block_size)
        global_tokens = int((targets >= 0).sum())
        B = len(rows)
        lo, hi = self.rank * B // self.world_size, (self.rank + 1) * B // self.world_size
        return Batch(idx[lo:hi], targets[lo:hi], global_tokens, position)


# ---- evaluation rows -----------------------------------------------------------------------------
@dataclass
class EvalRows:
    """Held-out rows: prompts with a target item (ranking) and full sequences (text perplexity)."""

    prompts: list[np.ndarray]  # `<bos> <hist> items...` (or a search prompt)
    kinds: list[str]
    targets: np.ndarray  # (R,) target token ids
    histories: list[np.ndarray]  # item token ids to mask, per prompt
    sequences: list[np.ndarray]  # rows without a target: scored by perplexity

    def __len__(self) -> int:
        return len(self.prompts)


def read_eval_rows(files: Sequence[str]) -> EvalRows:
    prompts, kinds, targets, histories, sequences = [], [], [], [], []
    for path in files:
        t = storage.read_table([path], columns=["kind", "input_ids", "target_id", "history_ids"]).to_pylist()
        for row in t:
            ids = np.asarray(row["input_ids"], dtype=np.int64)
            target = row["target_id"]
            if target is None or target < 0:
                sequences.append(ids)
                continue
            prompts.append(ids)
            kinds.append(row["kind"])
            targets.append(target)
            histories.append(np.asarray(row["history_ids"] or [], dtype=np.int64))
    return EvalRows(prompts, kinds, np.asarray(targets, dtype=np.int64), histories, sequences)

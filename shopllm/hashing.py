"""Every hash the pipelines decide something by, in one place.

What is hashed where:
- `holdout_split` / `holdout_splits`: the valid/test/train split of a search pair by its query text and of a
  describe row by its item id (`shopllm.training_rows`), so a held-out query or item never reaches training.
- `stable_bucket` / `stable_fractions`: the sort bucket of a prepared row by f"{kind}\\x00{subject}"
  (`training_rows.sort_buckets`) and the user shard of prepare's events by user id
  (`pipelines/prepare.py:split_by_user_shard`).
- `stable_hash64` and `mix64`: the seed of a user's tie-shuffled history copies (the user id) and the random
  order of each copy (that seed mixed with the run's position and the copy's number;
  `training_rows.tie_shuffled`).
- `source_hash`: the cleaned fields a description is generated from, written by ingest into curated/items;
  `source_hash_of` reads it back (or computes it the same way) and score regenerates a description only when
  it changed (`shopllm.describe.needs_generation`).

Why each is stable across runs and workers:
- The key hashes are blake2b of the key's UTF-8 bytes (64 bits, big-endian), never Python's `hash()`, which
  is salted per process (PYTHONHASHSEED): every worker of every run gets the same number for the same key.
  A fraction is that number / 2**64 in float64, computed exactly alike one key at a time or many at once.
- `mix64` (splitmix64's finaliser) is fixed-width uint64 arithmetic, wrapping around: the same on every
  machine, and it depends only on its inputs.
- `per_distinct` computes a value per distinct key and spreads it back, so a row's value depends on its key
  alone, not on the batch, shard or order it arrived in.
- `source_hash` is sha1 of a JSON list of the cleaned fields (attributes sorted, price rounded to cents,
  missing text as ""), so the same item content gives the same 16 hex digits in any run, whatever the order
  of its attributes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# ---- keys: splits, buckets, shards, seeds --------------------------------------------------------


def stable_hash64(key: str) -> int:
    """A 64-bit number from `key`, the same on every machine and run (unlike Python's hash())."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def stable_fraction(key: str) -> float:
    """A number in [0, 1) from `key`, the same on every machine and run."""
    return stable_hash64(key) / 2**64


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: well-spread 64-bit values, also from consecutive integers (wrapping around)."""
    x = np.atleast_1d(np.asarray(x)).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def holdout_split(key: str, holdout: float) -> str:
    """'valid' or 'test' for a `holdout` share of keys (half each), else 'train'."""
    f = stable_fraction(key)
    if f < holdout / 2:
        return "valid"
    if f < holdout:
        return "test"
    return "train"


def stable_bucket(key: str, n: int) -> int:
    return int(stable_fraction(key) * n)


def stable_fractions(keys: Sequence[str]) -> np.ndarray:
    """stable_fraction of many keys, one loop without per-key function calls (it runs for every distinct
    user, item and query of a night)."""
    blake2b = hashlib.blake2b
    hashes = np.fromiter(
        (int.from_bytes(blake2b(k.encode("utf-8"), digest_size=8).digest(), "big") for k in keys), np.uint64, len(keys)
    )
    return hashes / 2**64  # uint64 -> nearest float64, then an exact division: the same value as int / 2**64


def per_distinct(keys: pa.Array, fn) -> pa.Array:
    """fn(distinct keys as a list) -> one value per distinct key, spread back over `keys` (keys repeat a lot)."""
    distinct = pc.unique(keys)
    return pa.array(fn(distinct.to_pylist())).take(pc.index_in(keys, value_set=distinct))


def holdout_splits(keys: pa.Array, holdout: float) -> pa.Array:
    """holdout_split of every key."""

    def splits(distinct: list[str]) -> np.ndarray:
        f = stable_fractions(distinct)
        return np.where(f < holdout / 2, "valid", np.where(f < holdout, "test", "train"))

    return per_distinct(keys, splits).cast(pa.string())


# ---- item content: when a description must be generated again -------------------------------------


def source_hash(
    title: str,
    description: str | None,
    category: str | None,
    brand: str | None,
    attributes: list[tuple[str, str]],
    price: float | None,
) -> str:
    """A stable 16-hex-digit hash of the cleaned fields a description is generated from."""
    payload = json.dumps(
        [
            title,
            description or "",
            category or "",
            brand or "",
            sorted(attributes),
            None if price is None else round(float(price), 2),
        ],
        ensure_ascii=False,
    )
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


def source_hash_of(item: Mapping) -> str:
    """A curated ITEMS row's (dict) `source_hash` from ingest; when ingest left it empty, `source_hash` of the
    row's own fields (its attributes a pyarrow dict or Beam's list of pairs alike)."""
    if item.get("source_hash"):
        return item["source_hash"]
    attributes = item.get("attributes") or ()
    pairs = attributes.items() if isinstance(attributes, Mapping) else attributes
    return source_hash(
        item.get("title") or "",
        item.get("description"),
        item.get("category"),
        item.get("brand"),
        [(str(k), str(v)) for k, v in pairs if k is not None and v is not None],
        item.get("price"),
    )

"""Every knob, as frozen dataclasses whose defaults are a real shop's nightly on a 2-core machine.

Config flows one way: `jobs/` read a TOML or YAML file (sections named like the fields of `Config`)
and flags, and hand the library these dataclasses. Each stage owns its section.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shopllm.errors import ConfigError


@dataclass(frozen=True)
class IngestConfig:
    session_gap_minutes: int = 30  # a new session after this much inactivity (when no session_id)
    max_description_chars: int = 20_000  # longer raw descriptions are rejected (reason too_long)
    batch_rows: int = 20_000  # rows per Arrow batch inside the pipeline
    shards: int = 16  # key shards for the group-by steps (dedupe, newest version, sessions)

    def __post_init__(self):
        for name in ("session_gap_minutes", "max_description_chars", "batch_rows", "shards"):
            if getattr(self, name) < 1:
                raise ConfigError(f"config.ingest.{name}: must be >= 1, got {getattr(self, name)}")


MAX_TIE_SHUFFLES = 64  # prepare.tie_shuffles at most (a copy's random order keys on position * 65 + copy)


@dataclass(frozen=True)
class PrepareConfig:
    vocab_size: int = 8000  # BPE text vocabulary, special tokens included
    history_window: int = 200  # training histories are cut into chunks of N items; prompts keep the last N
    history_eos: bool = False  # end training histories with <eos> (ranking reads only the next-item position)
    tie_shuffles: int = 3  # extra training copies of each history with same-timestamp events, those reordered
    min_history: int = 3  # users with fewer items are kept for training only (counted)
    describe_holdout: float = 0.05  # share of items (by hash) held out of describe training
    search_holdout: float = 0.05  # share of queries (by hash) held out
    max_describe_tokens: int = 160  # cut describe examples to this many tokens
    attribute_rows: bool = True  # items without a description: a training row of their attribute text alone
    describe_slots: bool = True  # describe targets with the item's facts as slot tokens (see shopllm.slots)
    catalog_search_rows: bool = True  # every item: a training search row from its attribute text to the item
    shard_rows: int = 50_000  # rows per output Parquet shard
    retrain_tokenizer: bool = False  # train a new tokenizer even if vocab/tokenizer.json exists

    def __post_init__(self):
        """Reject values that would give wrong or empty output."""
        where = "config.prepare"
        for name, least in (("history_window", 1), ("shard_rows", 1), ("max_describe_tokens", 8)):
            if getattr(self, name) < least:
                raise ConfigError(f"{where}.{name}: must be >= {least}, got {getattr(self, name)}")
        if not 0 <= self.tie_shuffles <= MAX_TIE_SHUFFLES:
            raise ConfigError(f"{where}.tie_shuffles: must be in [0, {MAX_TIE_SHUFFLES}], got {self.tie_shuffles}")
        for name in ("describe_holdout", "search_holdout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{where}.{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.vocab_size < 300:
            raise ConfigError(f"{where}.vocab_size: must be >= 300 (256 bytes + special tokens), got {self.vocab_size}")


@dataclass(frozen=True)
class ModelConfig:
    n_layer: int = 2  # transformer blocks
    n_head: int = 4  # attention heads per block (n_embd must divide by it)
    n_embd: int = 128  # width of every token's vector; item embeddings are this wide too
    block_size: int = 256  # longest sequence in tokens: <bos> <hist> + history_window items, describe rows
    dropout: float = 0.2  # dropout on embeddings, attention and MLP outputs while training
    tie_items: bool = True  # items score with their input embeddings; false: a separate output table


PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 64  # sequences per step (over all processes under torchrun)
    max_steps: int = 3000  # the learning rate decays over these steps (~9 minutes on 2 CPU cores at the sample's size)
    max_minutes: float = 10.0  # stop (and save) after this wall time, whichever comes first
    lr: float = 3e-3  # peak learning rate (AdamW), after the warmup
    min_lr: float = 3e-4  # the cosine ends here, at max_steps or max_minutes, whichever comes first
    warmup_steps: int = 50  # linear warmup from lr / warmup_steps
    weight_decay: float = 0.05  # AdamW decay on matrices and embeddings (not norms or biases)
    grad_clip: float = 1.0  # clip the gradient's global norm to this
    eval_every: int = 100  # steps between evaluations on the valid split (0: never)
    checkpoint_every: int = 100  # steps between checkpoints a killed run resumes from (0: only at the end)
    patience: int = 6  # evaluations without a better selection score (see jobs.train.selection_score) before stopping
    seed: int = 1234  # initial weights, dropout and batch order
    full_retrain: bool = False  # ignore the latest model and start from scratch
    label_smoothing: float = 0.1  # share of each item target's probability spread over all items (text stays sharp)
    future_items: int = 1  # > 1: also score the items 2..N ahead at each item position (see GPT.loss)
    future_weight: float = 0.5  # weight of that extra term
    mask_seen_items: bool = True  # score each next item over the items not yet in the sequence (see GPT.loss)
    sampled_softmax_above: int = 20_000  # catalogs of more items score item targets by sampled softmax, not over all
    sampled_negatives: int = 4096  # sampled softmax: uniform negatives shared by a step, besides the batch's items
    eval_batch_size: int = 256  # held-out prompts ranked per forward pass
    valid_users: int = 2000  # each evaluation ranks a fixed sample of this many held-out prompts (0: all of them)
    log_every: int = 20  # steps between progress lines on stderr
    ema_decay: float = 0.99  # > 0: evaluate and keep an exponential moving average of the weights (0: off)
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU; "bf16" or "fp32" on any device

    def __post_init__(self):
        for name in ("max_steps", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config.train.{name}: must be positive, got {getattr(self, name)}")
        for name in ("sampled_softmax_above", "sampled_negatives", "valid_users"):
            if getattr(self, name) < 0:
                raise ConfigError(f"config.train.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"config.train.ema_decay: expected a number in [0, 1), got {self.ema_decay!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"config.train.precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )


ANN_INDEXES = ("ivf", "hnsw")


@dataclass(frozen=True)
class ScoreConfig:
    top_k: int = 20  # items recommended per user, session and query
    active_days: int = 30  # users active in the last N days are scored
    min_query_count: int = 3  # queries searched at least M times are scored
    batch_size: int = 256  # prompts per model call on a worker (a decoding step costs little more for 256 than 64)
    max_new_tokens: int = 96  # longest generated description, in tokens
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling when temperature > 0
    seed: int = 0  # sampling seed (the same seed gives the same texts)
    device: str = "cpu"  # "cuda" to score on a GPU worker
    no_repeat_ngram: int = 0  # > 0: never repeat a token n-gram (off: it bans a template's own repeats)
    ann_above: int = 1_000_000  # catalogs of more items rank through an approximate index (shopllm[ann]); 0 = never
    ann_index: str = "ivf"  # that index: "ivf" (IVF-Flat, deterministic) or "hnsw" (graph, faster, built in parallel)
    ann_nprobe: int = 64  # ivf: lists searched per subject (more: closer to exact ranking, slower)
    ann_ef: int = 128  # hnsw: candidates kept while searching (more: closer to exact ranking, slower)

    def __post_init__(self):
        for name in ("top_k", "active_days", "min_query_count", "batch_size", "max_new_tokens", "ann_nprobe", "ann_ef"):
            if getattr(self, name) < 1:
                raise ConfigError(f"config.score.{name}: must be >= 1, got {getattr(self, name)}")
        if self.ann_above < 0:
            raise ConfigError(f"config.score.ann_above: must be >= 0 (0 = never), got {self.ann_above}")
        if self.ann_index not in ANN_INDEXES:
            raise ConfigError(
                f"config.score.ann_index: expected one of {', '.join(ANN_INDEXES)}, got {self.ann_index!r}"
            )
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(
                f"config.score: need temperature >= 0 and 0 < top_p <= 1, got {self.temperature} and {self.top_p}"
            )


@dataclass(frozen=True)
class EvaluateConfig:
    max_prompts: int = 10_000  # rank a fixed sample of at most this many test prompts per scope (0: all of them)

    def __post_init__(self):
        if self.max_prompts < 0:
            raise ConfigError(f"config.evaluate.max_prompts: must be >= 0 (0 = all), got {self.max_prompts}")


@dataclass(frozen=True)
class Config:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table of settings, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(fields))})")
        f = fields[key]
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            kwargs[key] = _build(f.default_factory, value, f"{where}.{key}")
        else:
            default = getattr(cls(), key)
            if isinstance(default, bool) and not isinstance(value, bool):
                raise ConfigError(f"{where}.{key}: expected true/false, got {value!r}")
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
                value = type(default)(value)
            kwargs[key] = value
    return cls(**kwargs)


def from_dict(data: dict[str, Any]) -> Config:
    return _build(Config, data or {}, "config")


def load(path: str | None) -> Config:
    """Read a TOML (.toml) or YAML (.yaml/.yml) file; None gives the defaults."""
    if not path:
        return Config()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file must end in .toml, .yaml or .yml: {p}")
    except (ValueError, ImportError) as e:  # tomllib.TOMLDecodeError and yaml.YAMLError are ValueErrors / YAMLError
        raise ConfigError(f"cannot parse {p}: {e}") from None
    except Exception as e:  # yaml.YAMLError does not derive from ValueError
        raise ConfigError(f"cannot parse {p}: {e}") from None
    return from_dict(data)


def replace(cfg, **changes):
    """dataclasses.replace that ignores None values (flags the user did not give)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(cfg, **changes) if changes else cfg


def to_dict(cfg) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def field_comments(cls) -> dict[str, str]:
    """Each field's trailing comment in the class's source: what the example config says about the knob."""
    import inspect

    found = re.findall(r"^\s+(\w+): [^#\n]*#\s*(.+)$", inspect.getsource(cls), flags=re.M)
    return dict(found)


def to_toml(cfg: Config) -> str:
    """The config as a TOML document with one [section] per stage, each key with its default and its
    comment (what `jobs/shopllm.example.toml` holds)."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v)

    def section(name: str, obj) -> list[str]:
        lines = [f"[{name}]"]
        nested = []
        comments = field_comments(type(obj))
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                nested.append((f"{name}.{f.name}", v))
            else:
                comment = f"  # {comments[f.name]}" if f.name in comments else ""
                lines.append(f"{f.name} = {value(v)}{comment}")
        for sub_name, sub in nested:
            lines += ["", *section(sub_name, sub)]
        return lines

    out = ["# shopllm settings; every key is optional and shows its default. Flags override the file.", ""]
    for f in dataclasses.fields(cfg):
        out += [*section(f.name, getattr(cfg, f.name)), ""]
    return "\n".join(out)

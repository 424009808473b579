"""`models/<version>/`: weights (a state_dict, loaded with weights_only=True), the config that rebuilds
the model, the tokenizer, the item vocabulary and the training metrics. `models/LATEST` names the
version readers should use; it moves only after that version's scores are published.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from shopllm import storage
from shopllm.model import GPT, GPTConfig
from shopllm.schemas import MODELS_DIR
from shopllm.vocab import TOKENIZER_FILE, ItemVocab

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LATEST_FILE = "LATEST"


def version_for(date: str) -> str:
    """Deterministic version name of the model trained for a date (a rerun replaces it)."""
    return f"v{date}"


def models_root(out: str | os.PathLike) -> Path:
    return Path(out) / MODELS_DIR


def model_dir(out: str | os.PathLike, version: str) -> Path:
    return models_root(out) / version


def latest_version(out: str | os.PathLike) -> str | None:
    p = models_root(out) / LATEST_FILE
    if not p.exists():
        return None
    v = p.read_text().strip()
    return v if v and (model_dir(out, v) / WEIGHTS_FILE).exists() else None


def warm_start_version(out: str | os.PathLike, date: str) -> str | None:
    """The model a night trained for `date` starts from: LATEST if it is from an earlier night, else the
    newest complete model of an earlier night. A rerun of a date so never warm-starts from its own model."""
    mine = version_for(date)
    latest = latest_version(out)
    if latest is not None and latest < mine:
        return latest
    root = models_root(out)
    earlier = (
        sorted(p.name for p in root.glob("v*") if p.name < mine and (p / WEIGHTS_FILE).exists())
        if root.is_dir()
        else []
    )
    return earlier[-1] if earlier else None


def set_latest(out: str | os.PathLike, version: str) -> None:
    root = models_root(out)
    if not (root / version / WEIGHTS_FILE).exists():
        raise FileNotFoundError(f"no model {version} under {root}")
    tmp = root / f".{LATEST_FILE}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(version + "\n")
    tmp.replace(root / LATEST_FILE)


def exists(out: str | os.PathLike, version: str) -> bool:
    return (model_dir(out, version) / WEIGHTS_FILE).exists()


def save(
    out: str | os.PathLike,
    version: str,
    model: GPT,
    *,
    tokenizer_json: str | os.PathLike,
    items: ItemVocab,
    metrics: dict,
    extra_config: dict | None = None,
) -> Path:
    """Write a complete model folder atomically (staging folder, then rename into place)."""
    root = models_root(out)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"_staging-{version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, tmp / WEIGHTS_FILE)
    (tmp / CONFIG_FILE).write_text(json.dumps({"model": model.config.to_dict(), **(extra_config or {})}, indent=2))
    shutil.copyfile(tokenizer_json, tmp / TOKENIZER_FILE)
    items.save(tmp)
    (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str))
    return storage.replace_dir(tmp, root / version)


@dataclass
class LoadedModel:
    version: str
    model: GPT
    items: ItemVocab
    tokenizer_path: Path
    config: dict
    metrics: dict


def load(out: str | os.PathLike, version: str, device: str = "cpu") -> LoadedModel:
    folder = model_dir(out, version)
    if not (folder / WEIGHTS_FILE).exists():
        raise FileNotFoundError(f"no model at {folder}")
    return load_folder(folder, device)


def load_config(folder: str | os.PathLike) -> dict:
    """A model folder's config.json (the model's shape and the settings it was saved with)."""
    return json.loads((Path(folder) / CONFIG_FILE).read_text())


def load_folder(folder: str | os.PathLike, device: str = "cpu") -> LoadedModel:
    folder = Path(folder)
    config = load_config(folder)
    model = GPT(GPTConfig(**config["model"]))
    state = torch.load(folder / WEIGHTS_FILE, map_location=device, weights_only=True)
    model.load_state_dict(state)
    model.to(device).eval()
    metrics_path = folder / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return LoadedModel(folder.name, model, ItemVocab.load(folder), folder / TOKENIZER_FILE, config, metrics)

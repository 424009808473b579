"""`models/<version>/`: weights (a state_dict, loaded with weights_only=True), the config that rebuilds
the model, the tokenizer, the item vocabulary and the training metrics. `models/LATEST` names the
version readers should use; it moves only after that version's scores are published.

Paths are strings (a local folder or a URI such as s3://bucket/out). A version folder is a committed
folder (`storage.committing`): on a local disk it is staged beside its place and renamed there with a
`_SUCCESS` marker; on object storage its files are listed by a manifest that `_SUCCESS` names. Readers go
through `committed_file`; a local version saved before models had `_SUCCESS` (weights present, no marker)
still loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from shopllm import storage
from shopllm.model import GPT, GPTConfig
from shopllm.schemas import MODELS_DIR
from shopllm.vocab import ITEM_VOCAB_FILE, TOKENIZER_FILE, ItemVocab, file_in

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LATEST_FILE = "LATEST"


def version_for(date: str) -> str:
    """Deterministic version name of the model trained for a date (a rerun replaces it)."""
    return f"v{date}"


def models_root(out: str | os.PathLike) -> str:
    return storage.join(os.fspath(out), MODELS_DIR)


def model_dir(out: str | os.PathLike, version: str) -> str:
    return storage.join(models_root(out), version)


def is_complete(folder: str | os.PathLike) -> bool:
    """A whole model version: committed, or (local, saved before `_SUCCESS` existed) holding its weights."""
    folder = os.fspath(folder)
    return storage.is_published(folder) or storage.exists(storage.join(folder, WEIGHTS_FILE))


def latest_version(out: str | os.PathLike) -> str | None:
    """The version models/LATEST names, if that version is complete."""
    try:
        v = storage.read_text(storage.join(models_root(out), LATEST_FILE)).strip()
    except FileNotFoundError:
        return None
    return v if v and exists(out, v) else None


def warm_start_version(out: str | os.PathLike, date: str) -> str | None:
    """The model a night trained for `date` starts from: LATEST if it is from an earlier night, else the
    newest complete model of an earlier night. A rerun of a date so never warm-starts from its own model."""
    mine = version_for(date)
    latest = latest_version(out)
    if latest is not None and latest < mine:
        return latest
    earlier = (v for v in reversed(storage.list_names(models_root(out))) if v.startswith("v") and v < mine)
    return next((v for v in earlier if exists(out, v)), None)  # newest first: one lookup in the usual case


def set_latest(out: str | os.PathLike, version: str) -> None:
    """Point models/LATEST at `version` (one atomic write: a rename locally, one PUT on object storage)."""
    if not exists(out, version):
        raise FileNotFoundError(f"no model {version} under {models_root(out)}")
    storage.write_text(storage.join(models_root(out), LATEST_FILE), version + "\n")


def exists(out: str | os.PathLike, version: str) -> bool:
    return is_complete(model_dir(out, version))


def save(
    out: str | os.PathLike,
    version: str,
    model: GPT,
    *,
    tokenizer_json: str | os.PathLike,
    items: ItemVocab,
    metrics: dict,
    extra_config: dict | None = None,
) -> str:
    """Write a complete model folder as one commit (readers see the old version or the new one, whole);
    `tokenizer_json` may be a local path or a URI. Returns the folder."""
    folder = model_dir(out, version)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with storage.committing(folder) as tmp:
        storage.write_bytes(storage.join(tmp, WEIGHTS_FILE), storage.bytes_of(lambda f: torch.save(state, f)))
        storage.write_json(storage.join(tmp, CONFIG_FILE), {"model": model.config.to_dict(), **(extra_config or {})})
        storage.write_bytes(storage.join(tmp, TOKENIZER_FILE), storage.read_bytes(os.fspath(tokenizer_json)))
        items.save(tmp)
        storage.write_json(storage.join(tmp, METRICS_FILE), metrics)
    return folder


@dataclass
class LoadedModel:
    version: str
    model: GPT
    items: ItemVocab
    tokenizer_path: str  # local path or URI of tokenizer.json: open it with TextTokenizer.load
    config: dict
    metrics: dict


def load(out: str | os.PathLike, version: str, device: str = "cpu") -> LoadedModel:
    folder = model_dir(out, version)
    if not is_complete(folder):
        raise FileNotFoundError(f"no model at {folder}")
    return load_folder(folder, device)


def load_config(folder: str | os.PathLike) -> dict:
    """A model folder's config.json (the model's shape and the settings it was saved with)."""
    return storage.read_json(file_in(folder, CONFIG_FILE))


def load_folder(folder: str | os.PathLike, device: str = "cpu") -> LoadedModel:
    """The model of one version folder (local or a URI); the weights load with weights_only=True from a local
    copy (object storage: downloaded once per process and machine, see storage.local_copy)."""
    folder = os.fspath(folder)
    files = _files(folder)
    config = storage.read_json(files(CONFIG_FILE))
    model = GPT(GPTConfig(**config["model"]))
    weights = storage.local_copy(files(WEIGHTS_FILE))
    model.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    model.to(device).eval()
    try:
        metrics = storage.read_json(files(METRICS_FILE))
    except FileNotFoundError:
        metrics = {}
    items = ItemVocab.read(files(ITEM_VOCAB_FILE))
    return LoadedModel(storage.name(folder), model, items, files(TOKENIZER_FILE), config, metrics)


def _files(folder: str):
    """name -> where that file of a model folder is, resolving the commit once (file_in does it per file)."""
    if not storage.is_published(folder):
        return lambda filename: storage.join(folder, filename)
    committed = {storage.name(f): f for f in storage.committed_files(folder)}

    def where(filename: str) -> str:
        if filename not in committed:
            raise FileNotFoundError(f"{storage.join(folder, filename)} not found")
        return committed[filename]

    return where

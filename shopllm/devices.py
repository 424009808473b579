"""Which torch device a stage runs on: one check, one message, for every stage that takes `--device`."""

from __future__ import annotations

from shopllm.errors import ConfigError


def resolve_device(flag: str | None) -> str:
    """ "cuda" or "cpu": the flag when it can be honoured here, a CUDA device when the flag is None and one
    is present. `--device cuda` on a machine without CUDA is a ConfigError (one line, before any work)."""
    import torch

    if flag not in (None, "cpu", "cuda"):
        raise ConfigError(f"--device: expected cpu or cuda, got {flag!r}")
    if flag == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    if flag is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return flag

"""Checkpoints: models, optimisers, schedulers, counters and RNG state, written atomically.

Only tensors and plain containers are saved, and they are read back with `torch.load(weights_only=True)`,
so a checkpoint from a shared store cannot run code when loaded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, **parts: Any) -> None:
    """save(path, model=model.state_dict(), optim=..., state={"epoch": 3}, rng=rng_state())"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(parts, tmp)
    os.replace(tmp, path)


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    return torch.load(Path(path), map_location=device, weights_only=True)

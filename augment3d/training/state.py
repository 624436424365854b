"""Saving and restoring the full training state (for ``--resume``) as safetensors + JSON."""

from __future__ import annotations

import torch

from ..checkpoint import load_bundle, save_bundle
from ..errors import CheckpointError

__all__ = ["TRAIN_STATE", "save_train_state", "load_train_state"]

TRAIN_STATE = "train_state"


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict) -> dict:
    state = opt.state_dict()
    for index, entry in state["state"].items():
        for key, value in entry.items():
            tensors[f"{prefix}.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return {"param_groups": state["param_groups"], "indices": sorted(state["state"])}


def _restore_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state = {}
    for index in meta["indices"]:
        head = f"{prefix}.{index}."
        state[index] = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_train_state(run_dir, *, step: int, modules: dict[str, torch.nn.Module],
                     optimizers: dict[str, torch.optim.Optimizer], rng: torch.Generator, extra: dict) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value
    opt_meta = {name: _flatten_optimizer(f"opt_{name}", opt, tensors) for name, opt in optimizers.items()}
    tensors["rng_state"] = rng.get_state()
    save_bundle(run_dir, TRAIN_STATE, "train_state", tensors, {"step": int(step), "optimizers": opt_meta, **extra})


def load_train_state(run_dir, *, modules: dict[str, torch.nn.Module],
                     optimizers: dict[str, torch.optim.Optimizer], rng: torch.Generator) -> dict:
    """Restore modules, optimisers and RNG in place; return the JSON metadata (step, ...)."""
    tensors, meta = load_bundle(run_dir, TRAIN_STATE, "train_state")
    try:
        for name, module in modules.items():
            head = f"{name}."
            module.load_state_dict({k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}, strict=True)
        for name, opt in optimizers.items():
            _restore_optimizer(f"opt_{name}", opt, tensors, meta["optimizers"][name])
        rng.set_state(tensors["rng_state"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(run_dir, f"training state does not match this model/recipe ({exc})") from None
    return meta

"""The full training state (for ``--resume``) as safetensors + JSON: networks, optimiser moments,
the random stream, and whatever JSON figures the loop keeps (ADA's sums, early stopping)."""

from __future__ import annotations

import torch

from ..io.checkpoint import load_bundle, save_bundle
from ..errors import CheckpointError
from ..io.run_files import TRAIN_STATE

__all__ = ["TRAIN_STATE", "TrainState", "save_train_state", "load_train_state"]


class TrainState:
    """The parts of a training run that a checkpoint holds, by name.

    ``modules`` and ``optimizers`` are saved as tensors under their names (``G.<param>``,
    ``opt_G.<index>.exp_avg``, ...), ``rng`` as ``rng_state``; each of ``trackers`` (objects with
    ``state_dict()`` / ``load_state_dict()`` of JSON values) into the JSON part.
    """

    def __init__(
        self,
        modules: dict[str, torch.nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        rng: torch.Generator,
        trackers: list,
    ):
        self.modules, self.optimizers, self.rng, self.trackers = modules, optimizers, rng, trackers

    def meta(self) -> dict:
        return {key: value for tracker in self.trackers for key, value in tracker.state_dict().items()}

    def tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Every tensor by its saved name, and the optimisers' JSON part."""
        tensors: dict[str, torch.Tensor] = {}
        for name, module in self.modules.items():
            tensors.update({f"{name}.{key}": value for key, value in module.state_dict().items()})
        opt_meta = {}
        for name, opt in self.optimizers.items():
            state = opt.state_dict()
            for index, entry in state["state"].items():
                for key, value in entry.items():
                    tensors[f"opt_{name}.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
            opt_meta[name] = {"param_groups": state["param_groups"], "indices": sorted(state["state"])}
        tensors["rng_state"] = self.rng.get_state()
        return tensors, opt_meta

    def restore(self, tensors: dict[str, torch.Tensor], opt_meta: dict) -> None:
        """Load saved tensors into the modules, optimisers and generator, in place (strict)."""
        for name, module in self.modules.items():
            head = f"{name}."
            module.load_state_dict({k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}, strict=True)
        for name, opt in self.optimizers.items():
            indices = opt_meta[name]["indices"]
            state = {}
            for index in indices:
                head = f"opt_{name}.{index}."
                state[index] = {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}
            opt.load_state_dict({"state": state, "param_groups": opt_meta[name]["param_groups"]})
        self.rng.set_state(tensors["rng_state"])

    def load_meta(self, meta: dict) -> None:
        for tracker in self.trackers:
            tracker.load_state_dict(meta)


def save_train_state(run_dir, step: int, state: TrainState, extra: dict | None = None) -> None:
    tensors, opt_meta = state.tensors()
    save_bundle(
        run_dir, TRAIN_STATE, "train_state", tensors, {"step": int(step), "optimizers": opt_meta, **state.meta(), **(extra or {})}
    )


def load_train_state(run_dir, state: TrainState) -> dict:
    """Restore ``state`` in place from ``run_dir``; return the JSON metadata (step, ...)."""
    tensors, meta = load_bundle(run_dir, TRAIN_STATE, "train_state")
    try:
        state.restore(tensors, meta["optimizers"])
        state.load_meta(meta)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(run_dir, f"training state does not match this model/recipe ({exc})") from None
    return meta

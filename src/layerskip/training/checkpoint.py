"""Resumable checkpoints, written atomically: a run killed at any moment resumes exactly.

A checkpoint holds the trainable weights, optimiser and scheduler state, the step (which is
also the data position, see `data.batch_indices`) and every process's RNG states (CPU and GPU). It is written
to a temporary directory and renamed into place, then `latest` is replaced atomically, so a
reader never sees half a checkpoint.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from layerskip.errors import LayerSkipError
from layerskip.training.distributed import Env

STATE_FILE = "state.pt"


def full_state(module: nn.Module, env: Env) -> dict[str, Tensor]:
    """The unsharded model state dict (on CPU; complete on the main process only under FSDP)."""
    if not env.sharded:
        return module.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def trainable_names(module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def rng_state(device: torch.device) -> dict[str, Tensor]:
    """The generators this process draws on: the CPU's, and its GPU's, on which layer dropout
    draws when the model is there (`torch.rand(..., device=h.device)`, the default generator)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Tensor] | Tensor, device: torch.device) -> None:
    """Restore `rng_state`; a bare tensor is the CPU state alone, as older checkpoints hold."""
    state = {"cpu": state} if isinstance(state, Tensor) else state
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class Checkpointer:
    root: Path
    env: Env
    keep: int

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        if not (path / STATE_FILE).is_file():
            raise LayerSkipError(f"checkpoint {path} named by {pointer} is missing")
        return path

    def save(self, step: int, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        model_sd, optim_sd = self._gather(module, optimizer)
        rng = [None] * self.env.world
        if self.env.sharded:
            dist.all_gather_object(rng, rng_state(self.env.device))
        else:
            rng = [rng_state(self.env.device)]
        if self.env.is_main:
            names = trainable_names(module)
            state = {
                "step": step,
                "model": {k: v for k, v in model_sd.items() if k in names},
                "optimizer": optim_sd,
                "scheduler": scheduler.state_dict(),
                "rng": rng,
            }
            self._write(step, state)
        if self.env.sharded:
            dist.barrier()

    def _gather(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
        if not self.env.sharded:
            return module.state_dict(), optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _write(self, step: int, state: dict[str, Any]) -> None:
        name = f"step_{step:07d}"
        final, tmp = self.root / name, self.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(state, tmp / STATE_FILE)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer_tmp = self.root / ".latest.tmp"
        pointer_tmp.write_text(name + "\n")
        os.replace(pointer_tmp, self.root / "latest")
        for old in sorted(self.root.glob("step_*"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def load(self, path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> int:
        """Restore everything saved by `save`; returns the step to continue from."""
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        if len(state["rng"]) != self.env.world:
            raise LayerSkipError(
                f"checkpoint {path} was written by {len(state['rng'])} processes; resume with as many"
            )
        if self.env.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            opts = StateDictOptions(full_state_dict=True, strict=False)
            set_state_dict(
                module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"], options=opts
            )
        else:
            unexpected = module.load_state_dict(state["model"], strict=False).unexpected_keys
            if unexpected:
                raise LayerSkipError(f"checkpoint {path} does not match the model: {unexpected[:3]}")
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"][self.env.rank], self.env.device)
        return int(state["step"])

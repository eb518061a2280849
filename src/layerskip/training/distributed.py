"""Many processes through torchrun and FSDP2 (`fully_shard`): gloo on CPU, NCCL on GPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class Env:
    rank: int
    world: int
    device: torch.device
    owns_group: bool = False  # init() created the process group, so close() destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world > 1


def init() -> Env:
    """Join the process group torchrun describes in the environment; one process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Env(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = torch.cuda.is_available()
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device("cpu")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Env(rank, world, device, owns_group)


def shard(objective: nn.Module, layers: nn.ModuleList) -> None:
    """FSDP2: each transformer block is a unit; the root holds the embedding, norm and head."""
    from torch.distributed.fsdp import fully_shard

    for layer in layers:
        fully_shard(layer)
    fully_shard(objective)


def mean(x: Tensor, env: Env) -> Tensor:
    """Average a tensor over processes (for logging), reduced on the process's device: NCCL
    accepts only tensors on the GPU it was set up for."""
    if env.sharded:
        x = x.detach().to(env.device, copy=True)
        dist.all_reduce(x)
        x /= env.world
    return x


def barrier(env: Env) -> None:
    if env.sharded:
        dist.barrier()


def close(env: Env) -> None:
    """Destroy the process group if `init` created it; a caller's own group stays theirs."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()

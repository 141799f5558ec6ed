"""Data parallelism through torch.distributed: one CPU process, or many processes under ``torchrun``.

``torchrun --nproc_per_node N -m mdm train ...`` sets ``RANK``/``WORLD_SIZE``;
:meth:`DistributedContext.from_env` then joins the process group (NCCL on CUDA,
gloo on CPU) and :meth:`DistributedContext.wrap` puts the training objective in
``DistributedDataParallel``, which averages the gradients. Without those
variables everything is a no-op and the same command runs in one process.

``find_unused_parameters`` is on because each step trains one task of the
mixture, and a task leaves some parameters unused (the class embedding in a text
task, the image head in text->text).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "DistributedContext":
        """Join the process group ``torchrun`` describes in the environment, or run alone."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not torch_dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(local)
            torch_dist.init_process_group(backend=backend)
        return cls(rank, world, local)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    def rows(self, global_batch: int) -> slice:
        """This process's rows of a global batch (contiguous, equal shares)."""
        share = global_batch // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def wrap(self, module: nn.Module) -> nn.Module:
        if self.world_size == 1:
            return module
        ids = [self.local_rank] if next(module.parameters()).is_cuda else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def mean(self, x: Tensor) -> Tensor:
        """The mean of a scalar over processes (for logging and the non-finite check)."""
        if self.world_size == 1:
            return x
        x = x.detach().clone()
        torch_dist.all_reduce(x)
        return x / self.world_size

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()

    def close(self) -> None:
        if self.world_size > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()

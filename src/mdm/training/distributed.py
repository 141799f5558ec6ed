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

    use_cuda: bool = False

    @classmethod
    def from_env(cls, device: str | torch.device | None = None) -> "DistributedContext":
        """Join the process group ``torchrun`` describes in the environment, or run alone.

        ``device``: ``None`` = CUDA when available; ``"cpu"`` keeps a GPU machine on
        gloo; ``"cuda"`` means this process's GPU, ``cuda:LOCAL_RANK``.
        """
        use_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(use_cuda=use_cuda)
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not torch_dist.is_initialized():
            if use_cuda:
                torch.cuda.set_device(local)
            torch_dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return cls(rank, world, local, use_cuda)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.use_cuda else torch.device("cpu")

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

    def any(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any (one small all-reduce)."""
        if self.world_size == 1:
            return bool(flag)
        t = torch.tensor([float(flag)], device=self.device())
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item())

    def on_main(self, fn, *args, **kwargs):
        """Run ``fn`` on rank 0 only; every rank returns once it is done, or raises its error.

        Without this, an exception on rank 0 (a bad path, a full disk) would leave the
        other ranks waiting at the next barrier until the launcher's timeout.
        """
        if self.world_size == 1:
            return fn(*args, **kwargs)
        result, error = None, None
        if self.is_main:
            try:
                result = fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                error = e
        status = [None if error is None else f"{type(error).__name__}: {error}"]
        torch_dist.broadcast_object_list(status, src=0)
        if error is not None:
            raise error
        if status[0] is not None:
            raise RuntimeError(f"rank 0 failed: {status[0]}")
        return result

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()

    @staticmethod
    def close_env() -> None:
        """Leave the process group, if this process joined one."""
        if torch_dist.is_available() and torch_dist.is_initialized():
            torch_dist.destroy_process_group()

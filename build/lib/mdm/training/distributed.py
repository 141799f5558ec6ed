"""Data parallelism through torch.distributed: one CPU process, or many processes under ``torchrun``.

``torchrun --nproc_per_node N -m mdm train ...`` sets ``RANK``/``WORLD_SIZE``;
:meth:`DistributedContext.from_env` then joins the process group (NCCL on CUDA,
gloo on CPU) and :meth:`DistributedContext.wrap` prepares the training objective
for ``train.distributed``:

- ``ddp``: ``DistributedDataParallel``, every process holds the whole model and
  the gradients are averaged. ``find_unused_parameters`` is on because each step
  trains one task of the mixture, and a task leaves some parameters unused (the
  class embedding in a text task, the image head in text->text).
- ``fsdp``: PyTorch's ``fully_shard`` (FSDP2) on every backbone block and then on
  the objective, so each process keeps 1/N of the parameters, gradients and AdamW
  moments, for the sizes whose weights do not fit one GPU (``paper-7b``). The
  objective, not the network, is the root unit because the loss calls the VAE
  before the network's ``forward``. Checkpoints, EMA and sample grids then need
  the full weights: :meth:`full_state` and :meth:`optimizer_state` gather them to
  rank 0 (collectives every rank must enter), so a checkpoint is the same file
  whichever strategy wrote it and resumes under any other.

Without those variables everything is a no-op and the same command runs in one process.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Iterable, NoReturn

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

from mdm.config import DISTRIBUTED_STRATEGIES as STRATEGIES


def _fully_shard():
    try:
        from torch.distributed.fsdp import fully_shard  # torch >= 2.6
    except ImportError:  # torch 2.4-2.5
        from torch.distributed._composable.fsdp import fully_shard
    return fully_shard


def _state_dict_api():
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict, set_model_state_dict,
                                                         set_optimizer_state_dict)
    return (StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_model_state_dict,
            set_optimizer_state_dict)


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    use_cuda: bool = False
    strategy: str = "ddp"  # one of STRATEGIES; only matters with more than one process

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"distributed strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")

    @classmethod
    def from_env(cls, device: str | torch.device | None = None, strategy: str = "ddp") -> "DistributedContext":
        """Join the process group ``torchrun`` describes in the environment, or run alone.

        ``device``: ``None`` = CUDA when available; ``"cpu"`` keeps a GPU machine on
        gloo; ``"cuda"`` means this process's GPU, ``cuda:LOCAL_RANK``.
        """
        use_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
        if not cls.launched():
            return cls(use_cuda=use_cuda, strategy=strategy)
        world = int(os.environ["WORLD_SIZE"])
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not torch_dist.is_initialized():
            if use_cuda:
                torch.cuda.set_device(local)
            torch_dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return cls(rank, world, local, use_cuda, strategy)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.use_cuda else torch.device("cpu")

    def rows(self, global_batch: int) -> slice:
        """This process's rows of a global batch (contiguous, equal shares)."""
        share = global_batch // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    @property
    def sharded(self) -> bool:
        """True when the parameters are split across processes (FSDP with more than one process)."""
        return self.strategy == "fsdp" and self.world_size > 1

    def wrap(self, module: nn.Module, units: Iterable[nn.Module] = ()) -> nn.Module:
        """The module the training step calls: ``module`` itself, in DDP, or sharded in place.

        ``units`` are the submodules FSDP gathers one at a time (the backbone blocks);
        whatever parameters they do not hold are gathered with ``module``'s forward.
        """
        if self.world_size == 1:
            return module
        if self.sharded:
            self.shard(module, units)
            return module
        ids = [self.local_rank] if next(module.parameters()).is_cuda else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def shard(self, module: nn.Module, units: Iterable[nn.Module] = ()) -> None:
        """Shard ``module`` in place as :meth:`wrap` does (also for a copy that never runs, the EMA):
        the same units give every parameter the same split, so shards can be combined locally."""
        if not self.sharded:
            return
        fully_shard = _fully_shard()
        for unit in units:
            fully_shard(unit)
        fully_shard(module)

    def full_state(self, module: nn.Module) -> dict[str, Tensor]:
        """``module.state_dict()`` with every tensor whole: gathered to rank 0 on the CPU when sharded
        (a collective: every rank calls it; ranks other than 0 get an empty dict)."""
        if not self.sharded:
            return module.state_dict()
        options, get_model, *_ = _state_dict_api()
        return get_model(module, options=options(full_state_dict=True, cpu_offload=True))

    def load_full_state(self, module: nn.Module, state: dict[str, Tensor]) -> None:
        """Load a whole state dict (every rank passes the same one) into ``module``, sharded or not."""
        if not self.sharded:
            module.load_state_dict(state)
            return
        options, _, _, set_model, _ = _state_dict_api()
        set_model(module, state, options=options(full_state_dict=True))

    def optimizer_state(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """``optimizer.state_dict()`` (parameters by index) with whole tensors; gathered to rank 0 when
        sharded, as :meth:`full_state`. ``module`` owns the optimizer's parameters, in that order."""
        if not self.sharded:
            return optimizer.state_dict()
        options, _, get_optimizer, *_ = _state_dict_api()
        by_name = get_optimizer(module, optimizer, options=options(full_state_dict=True, cpu_offload=True))
        index = {name: i for i, (name, _) in enumerate(module.named_parameters())}
        return {"state": {index[name]: st for name, st in by_name.get("state", {}).items()},
                "param_groups": [{**g, "params": [index[n] for n in g["params"]]}
                                 for g in by_name.get("param_groups", [])]}

    def load_optimizer_state(self, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Load :meth:`optimizer_state`'s format (every rank passes the same one), sharded or not."""
        if not self.sharded:
            optimizer.load_state_dict(state)
            return
        options, _, _, _, set_optimizer = _state_dict_api()
        names = [name for name, _ in module.named_parameters()]
        by_name = {"state": {names[int(i)]: st for i, st in state["state"].items()},
                   "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]}
                                    for g in state["param_groups"]]}
        # strict=False: a parameter no step has used yet (the image head after text tasks only) has no
        # moments in the checkpoint. The loader gives it zero moments at step 1; drop them, so that its
        # first update is Adam's first step, as in the optimizer that wrote the checkpoint.
        set_optimizer(module, optimizer, by_name, options=options(full_state_dict=True, strict=False))
        for name, param in module.named_parameters():
            if name not in by_name["state"]:
                optimizer.state.pop(param, None)

    @staticmethod
    def local_value(x: Tensor) -> Tensor:
        """A plain tensor from a possibly distributed one (a sharded model's gradient norm)."""
        return x.full_tensor() if hasattr(x, "full_tensor") else x

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
    def launched() -> bool:
        """Whether this process is one of several that ``torchrun`` started (``WORLD_SIZE`` > 1)."""
        return int(os.environ.get("WORLD_SIZE", "1")) > 1

    @staticmethod
    def close_env() -> None:
        """Leave the process group, if this process joined one."""
        if torch_dist.is_available() and torch_dist.is_initialized():
            torch_dist.destroy_process_group()

    @staticmethod
    def exit_worker(code: int) -> NoReturn:
        """End a ``torchrun`` worker with ``code`` without the interpreter's shutdown.

        Why: the process group outlives :meth:`close_env` (PyTorch still holds references to it), so gloo's
        worker threads run on while Python finalizes. A thread that drops the last reference to a finished
        collective (its tensors belong to Python objects) then needs the GIL, is ended by the finalizing
        interpreter, and the C++ runtime aborts the process: ``terminate called without an active exception``,
        exit -6, after a run that saved everything. It happened in about 1 of 25 FSDP resumes on a loaded
        2-core machine (a core dump shows ``AsyncBroadcastWork``'s destructor in ``ProcessGroupGloo::runLoop``).
        Every file the run writes is closed by then; only the standard streams need flushing.
        """
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

"""Random draws for one process's rows of a global batch.

Data-parallel training splits a global batch of B samples across ranks. For the
run to be the same computation whatever the number of processes (tested: two
CPU processes give the parameters of one process with the same global batch,
``tests/training/test_distributed.py``), sample i must get the same noise, time and dropout draws on
whichever rank holds it. :class:`BatchRandom` therefore draws every random
tensor for the whole global batch from the shared seed and keeps this rank's
rows. The extra draws are a few small tensors per step.
"""

from __future__ import annotations

import torch
from torch import Tensor


class BatchRandom:
    """``rand``/``randn``/``randint`` over rows ``rows`` of a batch of ``global_batch`` samples.

    Every shape passed in starts with the local batch size; with ``rows=None`` the
    local batch is the global one and the draws are plain generator calls.
    """

    def __init__(self, generator: torch.Generator | None, device: torch.device | str,
                 rows: slice | None = None, global_batch: int | None = None) -> None:
        if (rows is None) != (global_batch is None):
            raise ValueError("BatchRandom: give both rows and global_batch, or neither")
        self.generator, self.device = generator, torch.device(device)
        self.rows, self.global_batch = rows, global_batch

    def _global(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.rows is None:
            return shape
        local = len(range(*self.rows.indices(self.global_batch)))
        if shape[0] != local:
            raise ValueError(f"BatchRandom: leading size {shape[0]} is not this rank's {local} rows")
        return (self.global_batch, *shape[1:])

    def _local(self, x: Tensor) -> Tensor:
        return x if self.rows is None else x[self.rows]

    def rand(self, *shape: int) -> Tensor:
        return self._local(torch.rand(self._global(shape), generator=self.generator, device=self.device))

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        return self._local(torch.randn(self._global(shape), generator=self.generator, device=self.device,
                                       dtype=dtype))

    def randint(self, high: int, *shape: int) -> Tensor:
        return self._local(torch.randint(0, high, self._global(shape), generator=self.generator,
                                         device=self.device))

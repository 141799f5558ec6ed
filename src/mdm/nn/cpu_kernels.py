"""The project's C++ CPU kernels (``csrc/*.cpp``), built with ``torch.utils.cpp_extension`` on first use.

Each kernel is a fused form of a PyTorch reference beside it (:mod:`mdm.nn.causal_conv`, :mod:`mdm.nn.ssd`), and
tests tie the two together. A build takes about a minute and is cached on disk per machine, from a copy of the
source kept there, so a new clone of the same code reuses it; a process loads each kernel once. Where the CPU has
AVX2 the build targets it (ATen's vectors, its Sleef ``exp``), under its own name so that a cached build is never
loaded on a CPU without it. When a kernel cannot be built (no compiler, no ninja, a failed build)
:func:`cpu_kernel` warns once with the error and returns None, and the caller keeps its reference; each new
process tries the build again (a compiler installed later is found). The kernels' backward passes are first-order
only (``once_differentiable``): double backward, forward-mode AD and ``torch.func`` transforms need
``backbone.cpu_kernels=false``.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

SOURCES = Path(__file__).with_name("csrc")
KERNELS = ("causal_conv_silu", "decayed_scores", "ssd_scan")


def kernel_applies(x: Tensor) -> bool:
    """Whether a CPU kernel may serve ``x``: a float32/float64 CPU tensor outside ``torch.compile`` (inductor
    fuses the references itself, and an extension call would break its graph)."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not torch.compiler.is_compiling())


def _build_directory(cpp_extension: ModuleType, module: str) -> Path | None:
    """Where ``cpp_extension`` builds ``module``, or None. Asks a private helper; if that moves, the build still
    works, only without :func:`stable_source` and the "compiling" message."""
    try:
        return Path(cpp_extension._get_build_directory(module, verbose=False))
    except Exception:
        return None


def stable_source(source: Path, build_directory: Path) -> Path:
    """``source`` copied into ``build_directory``, the copy rewritten only when its bytes differ.

    ninja rebuilds when a source's path or modification time changes, so building from the checkout would
    redo the minute-long build in every new clone (CI's, a second worktree) although the code is the same.
    The copy keeps one path per machine and keeps its time while the text is unchanged. Written through a
    temporary file and a rename, so a process reading it never sees half a file."""
    target = build_directory / source.name
    text = source.read_bytes()
    if not target.is_file() or target.read_bytes() != text:
        build_directory.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        partial.write_bytes(text)
        partial.replace(target)
    return target


@functools.cache
def cpu_kernel(name: str) -> ModuleType | None:
    """The compiled module of ``csrc/<name>.cpp`` (one of :data:`KERNELS`), or None after one warning."""
    if name not in KERNELS:
        raise ValueError(f"cpu_kernel: unknown kernel {name!r}; one of {', '.join(KERNELS)}")
    from torch.utils import cpp_extension

    try:
        # -fopenmp: at::parallel_for splits work only in an OpenMP build (else it runs serially); the
        # libgomp.so.1 it links is the one torch has loaded already (same soname), so one thread pool.
        module, flags = f"mdm_{name}", ["-O3", "-fopenmp"]
        if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
            module, flags = f"{module}_avx2", flags + ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2",
                                                      "-DCPU_CAPABILITY=AVX2"]
        source, build_directory = SOURCES / f"{name}.cpp", _build_directory(cpp_extension, module)
        if build_directory is not None:
            source = stable_source(source, build_directory)
            if not any(build_directory.glob("*.so")):
                print(f"mdm: compiling the CPU kernel {name} (once per machine, about a minute)", file=sys.stderr,
                      flush=True)
        return cpp_extension.load(module, sources=[str(source)], extra_cflags=flags,
                                  extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as error:  # a missing compiler or ninja, a failed build: the reference still works
        message = " ".join(str(error).split())[-600:]
        warnings.warn(f"mdm: the CPU kernel {name} could not be built ({type(error).__name__}: {message}); "
                      f"using its PyTorch reference, which gives the same results more slowly",
                      RuntimeWarning, stacklevel=2)
        return None

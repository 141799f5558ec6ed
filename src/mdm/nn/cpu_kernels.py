"""The project's C++ CPU kernels (``csrc/*.cpp``), built with ``torch.utils.cpp_extension`` on first use.

Each kernel is a fused form of a PyTorch reference beside it (:mod:`mdm.nn.causal_conv`, :mod:`mdm.nn.ssd`), and
tests tie the two together. A build takes about a minute and is cached on disk per machine, with a fingerprint of
what went into it, so a new clone of the same code reuses it; a process loads each kernel once. Where the CPU has
AVX2 the build targets it (ATen's vectors, its Sleef ``exp``), under its own name so that a cached build is never
loaded on a CPU without it. When a kernel cannot be built (no compiler, no ninja, a failed build)
:func:`cpu_kernel` warns once with the error and returns None, and the caller keeps its reference; each new
process tries the build again (a compiler installed later is found). The kernels' backward passes are first-order
only (``once_differentiable``): double backward, forward-mode AD and ``torch.func`` transforms need
``backbone.cpu_kernels=false``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

SOURCES = Path(__file__).with_name("csrc")
KERNELS = ("causal_conv_silu", "decayed_scores", "ssd_scan", "ssd_recurrent")


def kernel_applies(x: Tensor) -> bool:
    """Whether a CPU kernel may serve ``x``: a float32/float64 CPU tensor outside ``torch.compile`` (inductor
    fuses the references itself, and an extension call would break its graph)."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not torch.compiler.is_compiling())


def _build_directory(cpp_extension: ModuleType, module: str) -> Path | None:
    """Where ``cpp_extension`` builds ``module``, or None. Asks a private helper; if that moves, every process
    goes through ``cpp_extension.load`` (ninja decides) and only the "compiling" message is lost."""
    try:
        return Path(cpp_extension._get_build_directory(module, verbose=False))
    except Exception:
        return None


def build_fingerprint(source: bytes, flags: list[str]) -> str:
    """What a cached build depends on: the kernel's text, the compiler flags, the torch and Python versions.

    ninja's own check also compares the build's command line, which names the environment's torch headers by
    path, so a new clone with its own virtual environment would redo the minute-long build although nothing
    that goes into the library changed. A build is reused when this fingerprint matches instead."""
    digest = hashlib.sha256(source)
    for part in (*flags, torch.__version__, sys.version.split()[0], sys.platform):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()


def load_cached(module: str, build_directory: Path, fingerprint: str) -> ModuleType | None:
    """The built ``module`` from ``build_directory`` when its recorded fingerprint is ``fingerprint``, else None
    (nothing built yet, or built from other code, flags or torch)."""
    stamp, library = _stamp(build_directory, module), build_directory / f"{module}.so"
    if not (stamp.is_file() and library.is_file() and stamp.read_text().strip() == fingerprint):
        return None
    spec = importlib.util.spec_from_file_location(module, library)
    if spec is None or spec.loader is None:
        return None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def _stamp(build_directory: Path, module: str) -> Path:
    """The file that records the fingerprint of the build of ``module`` in ``build_directory``."""
    return build_directory / f"{module}.fingerprint"


def _record(build_directory: Path, module: str, fingerprint: str) -> None:
    """Write the fingerprint of the build just made, through a rename so no reader sees half of it."""
    partial = build_directory / f"{module}.fingerprint.{os.getpid()}"
    partial.write_text(fingerprint)
    partial.replace(_stamp(build_directory, module))


def build_target(name: str) -> tuple[str, list[str]]:
    """The module name and compiler flags of kernel ``name`` on this CPU."""
    # -fopenmp: at::parallel_for splits work only in an OpenMP build (else it runs serially); the
    # libgomp.so.1 it links is the one torch has loaded already (same soname), so one thread pool.
    module, flags = f"mdm_{name}", ["-O3", "-fopenmp"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        module, flags = f"{module}_avx2", flags + ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2",
                                                  "-DCPU_CAPABILITY=AVX2"]
    return module, flags


@functools.cache
def cpu_kernel(name: str) -> ModuleType | None:
    """The compiled module of ``csrc/<name>.cpp`` (one of :data:`KERNELS`), or None after one warning."""
    if name not in KERNELS:
        raise ValueError(f"cpu_kernel: unknown kernel {name!r}; one of {', '.join(KERNELS)}")
    from torch.utils import cpp_extension

    try:
        module, flags = build_target(name)
        source, build_directory = SOURCES / f"{name}.cpp", _build_directory(cpp_extension, module)
        fingerprint = build_fingerprint(source.read_bytes(), flags)
        if build_directory is not None:
            cached = load_cached(module, build_directory, fingerprint)
            if cached is not None:
                return cached
            _stamp(build_directory, module).unlink(missing_ok=True)  # the build below replaces it
            if not any(build_directory.glob("*.so")):
                print(f"mdm: compiling the CPU kernel {name} (once per machine, about a minute)", file=sys.stderr,
                      flush=True)
        loaded = cpp_extension.load(module, sources=[str(source)], extra_cflags=flags,
                                    extra_ldflags=["-fopenmp"], verbose=False)
        if build_directory is not None:
            _record(build_directory, module, fingerprint)
        return loaded
    except Exception as error:  # a missing compiler or ninja, a failed build: the reference still works
        message = " ".join(str(error).split())[-600:]
        warnings.warn(f"mdm: the CPU kernel {name} could not be built ({type(error).__name__}: {message}); "
                      f"using its PyTorch reference, which gives the same results more slowly",
                      RuntimeWarning, stacklevel=2)
        return None

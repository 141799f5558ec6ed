"""Fixtures shared by the nn tests."""

import pytest
import torch

from mdm.nn.cpu_kernels import cpu_kernel
from mdm.training.loop import missing_compiler


@pytest.fixture(scope="module")
def built_kernel(request):
    """The CPU kernel a test module names in ``KERNEL``, built; where a C++ compiler is on PATH a failed build
    fails here instead of skipping, so a broken kernel cannot hide behind the fallback."""
    name = request.module.KERNEL
    module = cpu_kernel(name)
    if module is None:
        assert missing_compiler(torch.device("cpu")) is not None, f"a C++ compiler is on PATH but {name} did not build"
        pytest.skip("no C++ compiler: the kernel cannot be built here")
    return module


@pytest.fixture
def empty_build_cache(tmp_path, monkeypatch):
    """``cpp_extension`` pointed at an empty build folder, so no kernel the machine built is loaded from it."""
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda module, verbose: str(tmp_path / module))
    return tmp_path


@pytest.fixture
def count_calls(monkeypatch):
    """``count_calls(module, name)`` wraps ``module.name`` for the test and returns the list each call appends to:
    which path a dispatcher took."""
    def patch(module, name: str) -> list[int]:
        calls, real = [], getattr(module, name)

        def spy(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
        return calls
    return patch

"""The kernels' build cache: reused when the code, flags and torch match (whatever the checkout's or the virtual
environment's path), rebuilt when any of them changes."""

import pytest
import torch

from mdm.nn import cpu_kernels
from mdm.nn.cpu_kernels import build_fingerprint, build_target, load_cached

KERNEL = "ssd_scan"  # for conftest's built_kernel


def test_the_fingerprint_follows_the_source_the_flags_and_torch(monkeypatch):
    base = build_fingerprint(b"int one() { return 1; }", ["-O3"])
    assert base == build_fingerprint(b"int one() { return 1; }", ["-O3"])
    assert base != build_fingerprint(b"int one() { return 2; }", ["-O3"])
    assert base != build_fingerprint(b"int one() { return 1; }", ["-O3", "-mavx2"])
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert base != build_fingerprint(b"int one() { return 1; }", ["-O3"])


def test_nothing_is_loaded_without_a_matching_fingerprint(tmp_path):
    (tmp_path / "mdm_k.so").write_bytes(b"not a library")
    assert load_cached("mdm_k", tmp_path, "abc") is None  # no fingerprint recorded
    (tmp_path / "mdm_k.fingerprint").write_text("other")
    assert load_cached("mdm_k", tmp_path, "abc") is None  # built from other code


@pytest.fixture
def fresh_cache():
    cpu_kernels.cpu_kernel.cache_clear()
    yield
    cpu_kernels.cpu_kernel.cache_clear()


def test_a_missing_build_is_made_and_recorded(empty_build_cache, monkeypatch, fresh_cache):
    from torch.utils import cpp_extension

    calls = []
    monkeypatch.setattr(cpp_extension, "load", lambda module, **kwargs: calls.append(module) or "built")
    module, flags = build_target("ssd_scan")
    (empty_build_cache / module).mkdir()
    assert cpu_kernels.cpu_kernel("ssd_scan") == "built" and calls == [module]
    assert (empty_build_cache / module / f"{module}.fingerprint").read_text() == build_fingerprint(
        (cpu_kernels.SOURCES / "ssd_scan.cpp").read_bytes(), flags)


def test_a_recorded_build_loads_without_the_compiler(built_kernel, monkeypatch, fresh_cache):
    """``built_kernel`` (conftest) has built ssd_scan in this environment; a second process of another clone with the
    same code must load it without ``cpp_extension.load`` (whose ninja would rebuild for a new headers path)."""
    from torch.utils import cpp_extension

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although the fingerprint matched")

    assert cpu_kernels.cpu_kernel("ssd_scan") is not None  # records the fingerprint if an older build lacked it
    cpu_kernels.cpu_kernel.cache_clear()
    monkeypatch.setattr(cpp_extension, "load", no_build)
    loaded = cpu_kernels.cpu_kernel("ssd_scan")
    assert loaded is not None and any(callable(getattr(loaded, name)) for name in dir(loaded)
                                      if not name.startswith("_"))

"""The kernels' build: from a copy of the source that keeps its path and time while its text is unchanged."""

import os

from mdm.nn import cpu_kernels
from mdm.nn.cpu_kernels import stable_source


def test_the_copy_is_rewritten_only_when_the_text_changes(tmp_path):
    checkout, build = tmp_path / "clone", tmp_path / "build"
    checkout.mkdir()
    source = checkout / "scan.cpp"
    source.write_text("int one() { return 1; }\n")
    copy = stable_source(source, build)
    assert copy == build / "scan.cpp" and copy.read_text() == source.read_text()

    os.utime(copy, ns=(10**18, 10**18))  # an old build's copy: ninja compares this time with the object's
    source.touch()  # a fresh clone: same text, new time
    assert stable_source(source, build) == copy and copy.stat().st_mtime_ns == 10**18

    source.write_text("int one() { return 2; }\n")
    stable_source(source, build)
    assert copy.read_text() == "int one() { return 2; }\n" and copy.stat().st_mtime_ns != 10**18
    assert sorted(p.name for p in build.iterdir()) == ["scan.cpp"]  # no partial file left behind


def test_the_kernel_is_built_from_the_copy_not_the_checkout(tmp_path, monkeypatch):
    from torch.utils import cpp_extension

    built = {}
    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda module, verbose: str(tmp_path / module))
    monkeypatch.setattr(cpp_extension, "load", lambda module, sources, **kwargs: built.update(module=module,
                                                                                             sources=sources))
    cpu_kernels.cpu_kernel.cache_clear()
    try:
        cpu_kernels.cpu_kernel("ssd_scan")
    finally:
        cpu_kernels.cpu_kernel.cache_clear()
    assert built["sources"] == [str(tmp_path / built["module"] / "ssd_scan.cpp")]
    assert (tmp_path / built["module"] / "ssd_scan.cpp").read_bytes() == \
        (cpu_kernels.SOURCES / "ssd_scan.cpp").read_bytes()

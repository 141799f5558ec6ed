"""The README's layout section names every module of the package, and nothing that is gone."""

import re
from pathlib import Path

import mdm

ROOT = Path(mdm.__file__).parents[2]


def layout_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Layout")
    return text[start:text.index("\n## ", start + 1)]


def test_every_module_is_named_in_the_readme_layout():
    section = layout_section()
    package = Path(mdm.__file__).parent
    missing = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
               if p.name != "__init__.py" and p.stem != "__main__" and p.name not in section]
    assert not missing, f"README.md's layout section does not name: {missing}"


def test_the_readme_layout_names_no_module_that_is_gone():
    section = layout_section()
    package = Path(mdm.__file__).parent
    names = {p.name for p in package.rglob("*.py")} | {p.name for p in (ROOT / "tests").rglob("*.py")}
    gone = sorted({n for n in re.findall(r"\b([a-z_0-9]+\.py)\b", section)} - names)
    assert not gone, f"README.md's layout section names modules that do not exist: {gone}"

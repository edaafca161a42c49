"""Each image installs one extra (`pip install .[operator]`, `.[inference]`): every third-party module its package
imports must come from that extra (or the base dependencies), directly or as a dependency of one — otherwise the
image builds and then crashes at start with ModuleNotFoundError.

Imports are read with `ast` from the package sources (module level and inside functions); imports under
`if TYPE_CHECKING:` or in a `try:` that catches ImportError are optional and skipped. Module → distribution
comes from the installed metadata of this venv (`importlib.metadata.packages_distributions`).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "operator": (ROOT / "operator" / "asr_operator", "asr_operator"),
    "inference": (ROOT / "inference" / "asr_inference", "asr_inference"),
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _optional(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Under `if TYPE_CHECKING:` or inside a try whose handlers catch ImportError/ModuleNotFoundError."""
    cur = node
    while cur in parents:
        parent = parents[cur]
        if isinstance(parent, ast.If) and "TYPE_CHECKING" in ast.unparse(parent.test) and cur in parent.body:
            return True
        if isinstance(parent, ast.Try) and cur in parent.body:
            for h in parent.handlers:
                caught = ast.unparse(h.type) if h.type is not None else "BaseException"
                if re.search(r"\b(ImportError|ModuleNotFoundError|Exception|BaseException)\b", caught):
                    return True
        cur = parent
    return False


def third_party_imports(pkg_dir: Path, own: str) -> dict[str, list[str]]:
    """top-level module → ['file:line', ...] for required absolute imports outside stdlib and the package."""
    found: dict[str, list[str]] = {}
    for path in sorted(pkg_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            if _optional(node, parents):
                continue
            for name in names:
                top = name.split(".")[0]
                if top == own or top in sys.stdlib_module_names or top == "__future__":
                    continue
                found.setdefault(top, []).append(f"{path.relative_to(pkg_dir.parent)}:{node.lineno}")
    return found


def allowed_distributions(extra: str) -> set[str]:
    """Base dependencies + the extra, closed over installed dependencies (what `pip install .[extra]` brings)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"][extra]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.distribution(req.name).requires or []
        except md.PackageNotFoundError:
            continue  # reported by the caller if something imports it
        for r in map(Requirement, requires):
            wanted = ["", *sorted(req.extras)]
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(r)
    return seen


@pytest.mark.parametrize("extra", sorted(PACKAGES))
def test_every_import_is_installed_by_the_images_extra(extra: str) -> None:
    pkg_dir, own = PACKAGES[extra]
    if not pkg_dir.is_dir():
        pytest.fail(f"{pkg_dir} is missing")
    imports = third_party_imports(pkg_dir, own)
    assert imports, f"no third-party imports found in {own} (parser broken?)"
    module_to_dists = md.packages_distributions()
    allowed = allowed_distributions(extra)
    problems = []
    for module, where in sorted(imports.items()):
        dists = {norm(d) for d in module_to_dists.get(module, [])}
        if not dists:
            problems.append(f"{module} (imported at {where[0]}) is not installed in this venv at all")
        elif not dists & allowed:
            problems.append(
                f"{module} (imported at {', '.join(where[:3])}) comes from {sorted(dists)}, which "
                f"`pip install .[{extra}]` does not install: add it to the `{extra}` extra"
            )
    assert not problems, "\n".join(problems)


def test_import_scanner_sees_required_and_skips_optional(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        "from __future__ import annotations\n"
        "import os, yaml\n"
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "from pkg import c\n"
        "if TYPE_CHECKING:\n    import numpy\n"
        "try:\n    import orjson\nexcept ImportError:\n    orjson = None\n"
        "def f():\n    import prometheus_client.parser\n"
    )
    got = third_party_imports(pkg, "pkg")
    assert sorted(got) == ["prometheus_client", "yaml"], got
    assert "pyyaml" in allowed_distributions("operator")
    assert "torch" not in allowed_distributions("operator")

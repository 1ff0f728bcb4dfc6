"""Every module under src/frugalserve imports only what ``pip install -e '.[engine]'`` installs.

The engine once imported ``httpx``, which only the dev extra installs, so ``make run`` (core + engine)
answered every chat with 503 while ``make test`` (which installs dev) stayed green. This reads every import
statement, lazy ones inside functions included, maps it to its distribution with
``importlib.metadata.packages_distributions()`` and checks that distribution is declared in pyproject.toml's
core ``dependencies`` or the ``engine`` extra. Imports under ``if TYPE_CHECKING:`` never run, and imports
inside ``try: ... except ImportError`` are optional by construction, so both are exempt.

A module that serves an optional feature may also import that feature's extra, and only that module:
:data:`OPTIONAL_EXTRAS` names each such module and its extra (``tracing.py`` imports ``opentelemetry``
lazily, only when ``tracing.enabled``, and fails at startup naming ``pip install 'frugalserve[otel]'``; the
Ray provisioner likewise with the ray extra; the web UI's pages with the ui extra, loaded only when
``ui.enabled``, and ``/ui`` says what to install when it is missing).
"""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "frugalserve"
# module (relative to the package) -> the extra it may import besides core and engine
OPTIONAL_EXTRAS = {
    "tracing.py": "otel",
    # imported when a Ray pool first starts; `frugalserve up` refuses a Ray pool without it, naming the extra
    "lifecycle/provisioners/ray.py": "ray",
    "lifecycle/provisioners/ray_actor.py": "ray",  # runs on the Ray node, where Ray is
    # the web UI: imported by ui.mount only when ui.enabled and Gradio is installed (tests/ui/test_mount.py)
    "ui/admin.py": "ui",
    "ui/chat.py": "ui",
    "ui/client.py": "ui",
    "ui/pages.py": "ui",
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions(*extras: str) -> set[str]:
    """Core, the engine extra, and ``extras``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    requirements = project["dependencies"] + optional["engine"] + [r for e in extras for r in optional[e]]
    names = set()
    for req in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        assert match, req
        names.add(canonical(match.group(1)))
    return names


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = {"ImportError", "ModuleNotFoundError"}
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(k, ast.Name) and k.id in names for k in kinds)


class _Imports(ast.NodeVisitor):
    """Collects (top-level module, line) of every import that runs unconditionally when reached."""

    def __init__(self) -> None:
        self.found: list[tuple[str, int]] = []

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        if any(_catches_import_error(h) for h in node.handlers):
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self.found.append((node.module.split(".")[0], node.lineno))


def third_party_imports(source: str) -> list[tuple[str, int]]:
    visitor = _Imports()
    visitor.visit(ast.parse(source))
    return [(m, line) for m, line in visitor.found if m not in sys.stdlib_module_names and m != "frugalserve"]


@functools.cache
def _providers() -> dict[str, list[str]]:
    return packages_distributions()  # scans every installed distribution: once per run


def undeclared_imports(source: str, declared: set[str]) -> list[str]:
    providers = _providers()
    problems = []
    for module, line in third_party_imports(source):
        dists = {canonical(d) for d in providers.get(module, [])}
        if not dists:
            problems.append(f"line {line}: import {module}: no installed distribution provides it")
        elif not dists & declared:
            problems.append(f"line {line}: import {module} comes from {sorted(dists)}, not declared in core or engine")
    return problems


def test_every_module_imports_only_core_and_engine_dependencies() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        extra = OPTIONAL_EXTRAS.get(path.relative_to(PACKAGE).as_posix())
        declared = declared_distributions(*([extra] if extra else []))
        for problem in undeclared_imports(path.read_text(), declared):
            problems.append(f"{path.relative_to(ROOT)}: {problem}")
    assert not problems, "\n".join(problems)


def test_a_lazy_dev_only_import_is_caught() -> None:
    """The checker itself: ``httpx`` (dev extra only) imported inside a function is reported."""
    source = "def fetch():\n    import httpx\n    return httpx\n"
    assert undeclared_imports(source, declared_distributions()) == [
        "line 2: import httpx comes from ['httpx'], not declared in core or engine"
    ]


def test_type_checking_and_optional_imports_are_exempt() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import httpx\n"
        "try:\n    import pytest\nexcept ImportError:\n    pytest = None\n"
        "import aiohttp\n"
    )
    assert third_party_imports(source) == [("aiohttp", 8)]


def test_an_optional_extra_is_allowed_only_in_the_module_that_serves_it() -> None:
    """``opentelemetry`` (the otel extra) is fine in tracing.py and reported anywhere else."""
    source = "def load():\n    from opentelemetry.sdk.trace import TracerProvider\n    return TracerProvider\n"
    assert undeclared_imports(source, declared_distributions("otel")) == []
    [problem] = undeclared_imports(source, declared_distributions())
    assert (
        problem.startswith("line 2: import opentelemetry comes from ") and "not declared in core or engine" in problem
    )
    assert OPTIONAL_EXTRAS["tracing.py"] == "otel"
    assert "opentelemetry" in {m for m, _ in third_party_imports((PACKAGE / "tracing.py").read_text())}

"""The house rules on imports, with no exceptions (docs/architecture.md draws them):

- the core (service/*.py and service/config/) imports no capability, nor service/ops/,
  nor service/dev/;
- service/ops/ (above the core) imports no capability, nor service/dev/;
- a capability (service/seen, notify, schedule, admin) never imports another: they meet
  in the core, in SQL or through the outbox, or the composition root hands one's work to
  another through the process State (service/state.py);
- nothing in service/ imports dispatcher/.

The composition root (service/app.py, service/asgi.py) and the dev tools (service/dev/)
sit on top and may import any of service/. Read off the source with ast, so an import
inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

from service.config.base import ROOT

SERVICE = ROOT / "service"
CAPABILITIES = ("seen", "notify", "schedule", "admin")
# The top: what builds the whole process (the app) or starts it (bin/dev's tools).
TOP = {"app.py", "asgi.py"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            # `from service import notify` names the package in the alias.
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def _modules(under: Path) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "__pycache__" not in p.parts)


def _core() -> list[Path]:
    top = [p for p in sorted(SERVICE.glob("*.py")) if p.name not in TOP]
    return top + _modules(SERVICE / "config")


def _package(name: str) -> str | None:
    """The service/ package an import names (`service.ops.cli` -> "ops"), if any."""
    parts = name.split(".")
    return parts[1] if len(parts) >= 2 and parts[0] == "service" else None


def _wrong(paths: list[Path], forbidden: set[str], own: str | None = None) -> list[str]:
    return [
        f"{path.relative_to(ROOT).as_posix()} imports {name}"
        for path in paths
        for name in _imports(path)
        if _package(name) in forbidden - {own}
    ]


def test_the_core_imports_nothing_above_it() -> None:
    wrong = _wrong(_core(), {*CAPABILITIES, "ops", "dev"})
    assert not wrong, "\n".join(wrong)


def test_ops_imports_no_capability() -> None:
    wrong = _wrong(_modules(SERVICE / "ops"), {*CAPABILITIES, "dev"})
    assert not wrong, "\n".join(wrong)


def test_no_capability_imports_another() -> None:
    wrong = [
        line
        for cap in CAPABILITIES
        for line in _wrong(_modules(SERVICE / cap), {*CAPABILITIES, "dev"}, own=cap)
    ]
    assert not wrong, "\n".join(wrong)


def test_service_never_imports_the_dispatcher() -> None:
    wrong = [
        f"{path.relative_to(ROOT).as_posix()} imports {name}"
        for path in _modules(SERVICE)
        for name in _imports(path)
        if name == "dispatcher" or name.startswith("dispatcher.")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_rules_see_the_imports() -> None:
    """The checks read what they should: the composition root imports capabilities, and
    the core's modules are found."""
    assert any(_package(n) in CAPABILITIES for n in _imports(SERVICE / "app.py"))
    assert {"state.py", "schedule_store.py", "audit.py"} <= {p.name for p in _core()}

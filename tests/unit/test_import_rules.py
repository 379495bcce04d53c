"""The house rules on imports: a capability (service/seen, notify, schedule, admin) never
imports another (they meet in the core, in SQL or through the outbox), and nothing under
service/ imports dispatcher/. Read off the source with ast, so an import inside a
function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

from service.config.base import ROOT

CAPABILITIES = ("seen", "notify", "schedule", "admin")
# Known arrows still to cut, each with where it should go; the list only shrinks.
ALLOWED: dict[tuple[str, str], str] = {
    # The admin's schedule pages drive bin/schedules' code (the store, the runner, the
    # backend's jobs, the form's checks); they should meet in the core or in SQL.
    ("admin", "schedule"): "service/admin/schedules.py",
}


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


def test_no_capability_imports_another() -> None:
    wrong = []
    for cap in CAPABILITIES:
        for path in _modules(ROOT / "service" / cap):
            for name in _imports(path):
                parts = name.split(".")
                if len(parts) < 2 or parts[0] != "service" or parts[1] not in CAPABILITIES:
                    continue
                other = parts[1]
                relative = path.relative_to(ROOT).as_posix()
                if other != cap and ALLOWED.get((cap, other)) != relative:
                    wrong.append(f"{relative} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_service_never_imports_the_dispatcher() -> None:
    wrong = [
        f"{path.relative_to(ROOT).as_posix()} imports {name}"
        for path in _modules(ROOT / "service")
        for name in _imports(path)
        if name == "dispatcher" or name.startswith("dispatcher.")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_allowed_arrows_still_exist() -> None:
    """An arrow cut is taken off ALLOWED, so it cannot come back unnoticed."""
    for (cap, other), relative in ALLOWED.items():
        names = _imports(ROOT / relative)
        assert any(n.startswith(f"service.{other}") for n in names), (cap, other, relative)

"""Start-up refuses broken notification templates, naming the file, before anything runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from service.config.base import ROOT
from tests.consumers import to_toml
from tests.support import config_data


def write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_a_broken_template_stops_the_dispatcher_at_start_naming_the_file(tmp_path: Path) -> None:
    for name in (
        "new_episode",
        "registration_confirmation",
        "payment_receipt",
        "comment_likes",
        "announcement",
    ):
        for source in (ROOT / "config" / "templates" / name).glob("*.toml"):
            write(tmp_path / name, source.name, source.read_text())
    write(tmp_path / "comment_likes", "en.toml", '[push]\ntitle = "{% if %}"\nbody = "b"\n')
    data = config_data("postgresql://127.0.0.1:1/unused")
    data["notify"]["templates_dir"] = str(tmp_path)
    (tmp_path / "config.toml").write_text(to_toml(data))
    ran = subprocess.run(
        [sys.executable, "-m", "dispatcher.main"],
        cwd=ROOT,
        env={"MARK_NOTIFY_CONFIG": str(tmp_path / "config.toml"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 2, ran.stderr
    assert "comment_likes/en.toml: [push].title: does not compile (line 1)" in ran.stderr
    assert "Traceback" not in ran.stderr

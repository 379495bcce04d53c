"""The API under uvicorn with two workers, as bin/dev runs it: one scrape of /metrics
answers for both workers (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from service.config.base import ROOT
from tests.consumers import to_toml
from tests.support import bearer, client_token, config_data, free_port

START_BUDGET_S = 60.0


def _counter(text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def _marks_per_worker(directory: Path) -> dict[str, float]:
    """Seen marks each worker recorded, from its own file (as the scrape reads them)."""
    found = {}
    for path in directory.glob("counter_*.db"):
        pid = path.name.removeprefix("counter_").removesuffix(".db")
        found[pid] = sum(
            value
            for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
            if json.loads(key)[1] == "mark_notify_seen_marks_total"
        )
    return {pid: n for pid, n in found.items() if n}


async def _burst(base: str, start: int, n: int) -> None:
    """n requests at once, each on a new connection: the kernel hands new connections to
    whichever worker accepts first, so both get some."""
    token = bearer(client_token("user-1"))
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        answers = await asyncio.gather(
            *(
                http.post("/v1/seen", json={"tag": "promotions", "id": f"p-{i}"}, headers=token)
                for i in range(start, start + n)
            )
        )
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]


def test_one_scrape_counts_the_requests_of_both_workers(tmp_path: Path, db_url: str) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(to_toml(config_data(db_url)))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "MARK_NOTIFY_CONFIG": str(config),
        "DATABASE_URL": db_url,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    argv = [sys.executable, "-m", "uvicorn", "service.asgi:app", "--port", str(port)]
    argv += ["--workers", "2", "--no-access-log", "--log-level", "warning"]
    api = subprocess.Popen(argv, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + START_BUDGET_S
        while True:
            assert api.poll() is None, "the API exited at start"
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API was not ready in time"
            time.sleep(0.2)

        sent = 0
        while len(_marks_per_worker(metrics_dir)) < 2 or sent < 100:
            assert sent < 2000, "every request went to one worker"
            asyncio.run(_burst(base, sent, 50))
            sent += 50

        seen = {"method": "POST", "route": "/v1/seen", "status": "2xx"}
        marks = {"tag": "promotions", "result": "recorded"}
        # A worker writes its tallies within a second (service/metrics.py, FLUSH_S).
        time.sleep(1.5)
        # Whichever worker answers the scrape, it counts every worker's requests.
        for _ in range(4):
            text = httpx.get(f"{base}/metrics", headers={"Connection": "close"}).text
            assert _counter(text, "mark_notify_http_requests_total", seen) == sent
            assert _counter(text, "mark_notify_seen_marks_total", marks) == sent
    finally:
        api.terminate()
        api.wait(timeout=30)
    per_worker = _marks_per_worker(metrics_dir)
    assert len(per_worker) == 2 and sum(per_worker.values()) == sent, per_worker


def test_the_dispatcher_refuses_the_api_workers_metrics_directory(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(to_toml(config_data("postgresql://127.0.0.1:1/unused")))
    ran = subprocess.run(
        [sys.executable, "-m", "dispatcher.main"],
        cwd=ROOT,
        env={
            "MARK_NOTIFY_CONFIG": str(config),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 2, ran.stderr
    assert "unset PROMETHEUS_MULTIPROC_DIR" in ran.stderr
    assert "Traceback" not in ran.stderr

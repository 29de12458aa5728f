"""scripts/device_check.sh: its quick dry run passes on the CPU and writes its files; a step that
fails stops it with a non-zero status and a line naming the step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "scripts" / "device_check.sh"


def run_check(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_quick_dry_run_passes_and_writes_its_files(tmp_path):
    out = tmp_path / "device"
    result = run_check("--dry-run", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for name in ("device_check.log", "devices.txt", "pytest.xml", "bench.json", "bench.md"):
        assert (out / name).is_file(), name
    log = (out / "device_check.log").read_text()
    for step in ("install", "devices", "tests", "1-vs-N devices", "bench"):
        assert f"=== device_check step: {step}" in log, step
    assert "device_check: passed" in log and "backend cpu" in log
    bench = json.loads((out / "bench.json").read_text())
    assert any("median_ms" in row for row in bench["sections"]["recurrent"]["rows"])


def test_a_failing_step_stops_the_script_and_names_the_step(tmp_path):
    """Without --dry-run the CPU is no GPU: the devices step fails, and nothing after it runs."""
    out = tmp_path / "device"
    result = run_check("--no-install", "--quick", "--out", str(out), timeout=120)
    assert result.returncode != 0
    assert "device_check: FAILED at step 'devices'" in result.stdout + result.stderr
    log = (out / "device_check.log").read_text()
    assert "FAILED at step 'devices'" in log and "=== device_check step: tests" not in log
    assert run_check("--bogus").returncode == 2

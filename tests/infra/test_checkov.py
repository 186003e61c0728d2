"""IaC security scan of infra/ with checkov (Bicep + secrets), run offline.

checkov's own pins conflict with ours, so it lives in a venv under .local/tools/, created on first
use from tests/infra/checkov-requirements.txt and reused while that file is unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.bicep_model import INFRA, ROOT

REQUIREMENTS = Path(__file__).with_name("checkov-requirements.txt")


def checkov_executable() -> Path:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    venv = ROOT / ".local" / "tools" / f"checkov-{digest}"
    exe = venv / "bin" / "checkov"
    ready = venv / ".installed"
    if ready.is_file() and exe.is_file():
        return exe
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
        capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, f"installing checkov failed:\n{install.stderr[-3000:]}"
    ready.write_text(REQUIREMENTS.read_text())
    return exe


@pytest.mark.slow
def test_checkov_finds_no_unjustified_issue_in_infra() -> None:
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(
        [str(checkov_executable()), "--directory", str(INFRA), "--framework", "bicep", "secrets",
         "--skip-download", "--quiet", "--output", "json"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )
    assert result.stdout.strip(), f"checkov printed nothing (exit {result.returncode}):\n{result.stderr[-3000:]}"
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_type = {r["check_type"]: r for r in reports}
    assert "bicep" in by_type, f"checkov did not scan the Bicep files: {list(by_type)}"
    bicep = by_type["bicep"]
    assert bicep["summary"]["parsing_errors"] == 0
    assert bicep["summary"]["passed"] >= 15  # it really evaluated our resources
    failures = [
        f"{c['check_id']} {c['check_name']} — {c['resource']} ({c['file_path']}:{c['file_line_range']})"
        for r in reports for c in r.get("results", {}).get("failed_checks", [])
    ]
    assert not failures, "checkov failures (fix, or skip with a reason next to the resource):\n" + "\n".join(failures)
    assert result.returncode == 0


def test_every_checkov_skip_gives_a_reason() -> None:
    skipped = 0
    for path in INFRA.rglob("*.bicep"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                match = re.search(r"//\s*checkov:skip=(CKV2?_[A-Z]+_\d+):(.+)$", line)
                assert match and len(match.group(2).strip()) >= 20, f"{path.name}: skip without a reason: {line}"
                skipped += 1
    assert skipped, "expected the justified skips in infra/modules (none found: did the syntax change?)"

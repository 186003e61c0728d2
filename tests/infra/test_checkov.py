"""IaC security scan of infra/ with checkov (Bicep + secrets), run offline.

checkov's own pins conflict with ours, so it lives in its own venv under .local/tools/, named after
tests/infra/checkov-requirements.txt's hash. scripts/bootstrap.sh creates it (with the project's venv);
the test never installs anything: without that venv it fails and says how to create it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.infra.bicep_model import INFRA, ROOT

REQUIREMENTS = Path(__file__).with_name("checkov-requirements.txt")


def checkov_venv() -> Path:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]  # = sha256sum | cut -c1-12
    return ROOT / ".local" / "tools" / f"checkov-{digest}"


def checkov_executable() -> Path:
    venv = checkov_venv()
    exe = venv / "bin" / "checkov"
    ready = venv / ".installed"  # written by bootstrap after a complete install
    if not (ready.is_file() and exe.is_file() and ready.read_bytes() == REQUIREMENTS.read_bytes()):
        pytest.fail(
            f"checkov is not installed in {venv.relative_to(ROOT)} (scripts/bootstrap.sh installs it from "
            f"{REQUIREMENTS.relative_to(ROOT)}). Run scripts/test again, or by hand:\n"
            f"  python3 -m venv --clear {venv.relative_to(ROOT)}\n"
            f"  {venv.relative_to(ROOT)}/bin/python -m pip install -r {REQUIREMENTS.relative_to(ROOT)}\n"
            f"  cp {REQUIREMENTS.relative_to(ROOT)} {ready.relative_to(ROOT)}",
            pytrace=False)
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

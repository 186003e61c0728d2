"""What ships: the deployment keeps the app and the files it reads; tools stay out."""
from pathlib import Path

from shared.bus.queues import QUEUES_FILE

ROOT = Path(__file__).resolve().parents[2]


def ignored() -> set[str]:
    lines = (ROOT / ".funcignore").read_text().splitlines()
    return {line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")}


def test_the_deployment_carries_the_schemas_and_queue_definitions_the_app_reads():
    assert QUEUES_FILE.parent.name == "schemas" and QUEUES_FILE.is_file()
    assert "schemas" not in ignored() and "shared" not in ignored() and "functions" not in ignored()


def test_local_tools_stay_out_of_the_deployment():
    assert {"devhost", "markr_ops", "tests", "bench", "scripts", "infra", "dashboard"} <= ignored()

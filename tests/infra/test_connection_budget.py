"""PostgreSQL connection budget: the worst case the Bicep allows must fit the server (issue #12).

Flex Consumption scales per function group: all HTTP functions form one group and every other
function is a group of its own, and `maximumInstanceCount` caps the on-demand instances of EACH group
("The maximum instance count applies to on-demand instances in each per-function scale group
(function group) rather than to the app's combined instances", Microsoft Learn, event-driven scaling,
"Limit scale-out"). Always-ready instances come on top of the cap; we configure none.

Per worker process the app holds at most MARKR_DB_POOL_MAX pooled connections plus one LISTEN
connection shared by the imports that wait for their result; the migration connection is closed before
the pool hands out its first connection, so it fits inside the pool's share. The local queue engine
(and its LISTEN connections) is not used in Azure (MARKR_BUS=azure).

    worst case = groups x maximumInstanceCount x processes per instance x (MARKR_DB_POOL_MAX + 1)
               <= max_connections - 15 (Azure reserves them) - OPERATOR_HEADROOM

docs/deploy.md shows the same numbers; this test fails when either drifts.
"""
from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infra.bicep_model import ROOT, accessor_path, body, evaluate, parse, resource
from tests.infra.test_bicep import FUNCTION_APP, app_settings, function_bindings

# Default max_connections per compute size (Microsoft Learn, Azure Database for PostgreSQL flexible
# server, "Limits": maximum connections). Azure keeps 15 of them for replication and monitoring.
MAX_CONNECTIONS = {
    "Standard_B1ms": 50, "Standard_B2s": 429, "Standard_B2ms": 859, "Standard_B4ms": 1718,
    "Standard_D2ds_v5": 859, "Standard_D4ds_v5": 1718, "Standard_D8ds_v5": 3437,
    "Standard_E2ds_v5": 1718, "Standard_E4ds_v5": 3437,
}
AZURE_RESERVED = 15
OPERATOR_HEADROOM = 10  # psql / markr-ops sessions and a hand-run migration, next to the app
LISTEN_CONNECTIONS_PER_PROCESS = 1
HTTP_GROUP = "http"
# Every function group the app has or is about to get (#12: the retry-queue functions). Counted even
# before they exist, so the budget does not silently break when they land.
PLANNED_GROUPS = {
    HTTP_GROUP, "validator", "marker", "aggregator", "notifier", "dead_letter_sweeper",
    "validator_retry", "marker_retry", "aggregator_retry",
}


def discovered_groups() -> set[str]:
    groups = set()
    for binding in function_bindings():
        kind = binding.get("type", "")
        if not kind.endswith("Trigger"):
            continue
        # HTTP functions share one group; so would Blob (Event Grid) and Durable ones (we have none).
        assert kind in {"httpTrigger", "serviceBusTrigger", "timerTrigger"}, (
            f"{binding['function']}: {kind} has its own Flex grouping rule; extend this model")
        groups.add(HTTP_GROUP if kind == "httpTrigger" else binding["function"])
    return groups


def scale_groups() -> set[str]:
    return PLANNED_GROUPS | discovered_groups()


def sizing(profile: str) -> dict[str, Any]:
    return evaluate(parse("main.bicep")["variables"]["sizing"]["value"], {"profile": profile})


def profiles() -> list[str]:
    sizing_node = parse("main.bicep")["variables"]["sizing"]["value"]
    return sorted(sizing_node["operator"]["operands"]["operand_1"])


def function_app_inputs(profile: str) -> dict[str, Any]:
    """What main.bicep passes to the function app module for `profile`, and what the module does with it."""
    params = parse("main.bicep")["modules"]["functionApp"]["config"]["params"]
    size = sizing(profile)
    wired = {}
    for name in ("maximumInstanceCount", "dbPoolMax"):
        path = accessor_path(params[name])
        assert path[0] == "sizing", f"main.bicep must pass {name} from the sizing profile, got {path}"
        wired[name] = size[path[1]]
    settings = app_settings()
    pool = evaluate(settings["MARKR_DB_POOL_MAX"], {"dbPoolMax": wired["dbPoolMax"]})
    processes = int(settings.get("FUNCTIONS_WORKER_PROCESS_COUNT", "1"))
    scale = body(resource(FUNCTION_APP, "site"))["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert accessor_path(scale["maximumInstanceCount"]) == ["maximumInstanceCount"]
    return {"maximumInstanceCount": wired["maximumInstanceCount"], "pool": int(pool),
            "processes": processes, "scale": scale, "sku": size["postgresSku"]["name"]}


def worst_case(profile: str) -> tuple[int, int]:
    """(worst-case app connections, connections the server can give the app) for a profile."""
    inputs = function_app_inputs(profile)
    per_process = inputs["pool"] + LISTEN_CONNECTIONS_PER_PROCESS
    app = len(scale_groups()) * inputs["maximumInstanceCount"] * inputs["processes"] * per_process
    budget = MAX_CONNECTIONS[inputs["sku"]] - AZURE_RESERVED - OPERATOR_HEADROOM
    return app, budget


def test_every_function_is_in_the_scale_group_model() -> None:
    found = discovered_groups()
    assert HTTP_GROUP in found and {"validator", "marker"} <= found  # discovery works
    unknown = found - PLANNED_GROUPS
    assert not unknown, f"new function groups {unknown}: add them to PLANNED_GROUPS and re-check the budget"


def test_parameter_files_only_use_profiles_the_budget_covers() -> None:
    used = {json_profile for json_profile in re.findall(
        r"^param profile = '(\w+)'$",
        "".join((ROOT / "infra" / f).read_text() for f in ("main.dev.bicepparam", "main.prod.bicepparam")),
        re.M)}
    azd = (ROOT / "infra" / "main.parameters.json").read_text()
    default = re.search(r'"\$\{MARKR_PROFILE=(\w+)\}"', azd)
    assert default, "main.parameters.json must default MARKR_PROFILE"
    used.add(default.group(1))
    assert used <= set(profiles())
    allowed = next(d["argument"] for d in parse("main.bicep")["parameters"]["profile"]["decorators"]
                   if d["type"] == "allowed")
    assert set(allowed) == set(profiles()), "every allowed profile needs a sizing entry (and a budget)"


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_worst_case_connections_fit_the_server(profile: str) -> None:
    assert set(profiles()) == {"dev", "prod"}
    inputs = function_app_inputs(profile)
    assert inputs["sku"] in MAX_CONNECTIONS, f"add {inputs['sku']}'s max_connections to MAX_CONNECTIONS"
    assert "alwaysReady" not in inputs["scale"], "always-ready instances add to the cap: count them here"
    assert app_settings()["MARKR_BUS"] == "azure"  # no local queue engine (and its LISTENs) in Azure
    assert 1 <= inputs["maximumInstanceCount"] <= 1000 and inputs["pool"] >= 1
    app, budget = worst_case(profile)
    assert app <= budget, (
        f"{profile}: {len(scale_groups())} groups x {inputs['maximumInstanceCount']} instances x "
        f"({inputs['pool']} pooled + {LISTEN_CONNECTIONS_PER_PROCESS} LISTEN) = {app} connections > {budget} "
        f"({inputs['sku']}: {MAX_CONNECTIONS[inputs['sku']]} - {AZURE_RESERVED} reserved - "
        f"{OPERATOR_HEADROOM} for operators)")


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_deploy_doc_shows_the_same_arithmetic(profile: str) -> None:
    inputs = function_app_inputs(profile)
    app, budget = worst_case(profile)
    doc = (ROOT / "docs" / "deploy.md").read_text()
    row = (f"| {profile} | {len(scale_groups())} | {inputs['maximumInstanceCount']} | {inputs['pool']} + 1 | "
           f"**{app}** | {inputs['sku'].removeprefix('Standard_')}: {MAX_CONNECTIONS[inputs['sku']]} "
           f"- {AZURE_RESERVED} - {OPERATOR_HEADROOM} = {budget} |")
    assert row in doc, f"docs/deploy.md connection table must contain:\n{row}"

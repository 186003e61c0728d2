"""Offline checks of infra/ (Bicep parsed with pycep-parser) against the code and queues.json."""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import pytest

from tests.infra.bicep_model import (
    INFRA,
    ROOT,
    accessor_path,
    bicep_files,
    body,
    depends_on,
    evaluate,
    loop,
    parse,
    queue_spec,
    resource,
)

FUNCTION_APP = "modules/functionapp.bicep"

# Settings the code or local.settings.template.json know that are deliberately NOT set in Azure.
NOT_SET_IN_AZURE = {
    "FUNCTIONS_WORKER_RUNTIME": "Flex Consumption rejects it: the runtime is functionAppConfig.runtime "
                                "(python 3.11)",
    "AzureWebJobsStorage": "identity-based: AzureWebJobsStorage__accountName/__credential/__clientId "
                           "replace the connection string (shared keys are disabled on the account)",
    "ServiceBusConnection": "no connection string in Azure (local auth is disabled on the namespace): "
                            "ServiceBusConnection__fullyQualifiedNamespace + the managed identity",
    "VaultStorage": "no connection string in Azure: VaultStorage__tableServiceUri + the managed identity",
    "MARKR_VAULT_KEY_FILE": "the local key-encryption key file; in Azure MARKR_VAULT_KEY_URL names the Key "
                            "Vault key instead (a key file on the app's disk is refused there)",
    "WEBSITE_SITE_NAME": "set by the platform itself; read only to refuse a local vault key file in Azure",
}
# Settings set in Azure that neither the template nor our code name.
AZURE_ONLY = {
    "AZURE_CLIENT_ID": "DefaultAzureCredential picks the user-assigned identity by this client id",
    "PYTHON_ENABLE_OPENTELEMETRY": "the Python worker passes the host's trace context to OpenTelemetry",
    "MARKR_DB_POOL_MAX": "PostgreSQL pool size per process, sized per profile (tests/infra/test_connection_budget.py)",
}
IDENTITY_SUFFIXES = {"fullyQualifiedNamespace", "credential", "clientId", "accountName",
                     "tableServiceUri", "blobServiceUri", "queueServiceUri"}
ENV_READ = re.compile(
    r"""(?:os\.environ\.get|os\.getenv|os\.environ\[|_int|_float|_bool|_str)\(?\s*["']([A-Za-z][A-Za-z0-9_]*)["']""")


def app_settings() -> dict[str, Any]:
    return parse(FUNCTION_APP)["variables"]["appSettings"]["value"]


def template_settings() -> set[str]:
    template = ROOT / "local.settings.template.json"
    return set(json.loads(template.read_text())["Values"])


def settings_read_by_code() -> set[str]:
    names = set()
    for folder in ("shared", "functions"):
        for path in (ROOT / folder).rglob("*.py"):
            names.update(ENV_READ.findall(path.read_text()))
    return names


@lru_cache(maxsize=1)
def function_bindings() -> list[dict[str, Any]]:
    import function_app
    from devhost.discovery import indexed_functions

    return [binding.get_dict_repr() | {"function": fn.get_function_name()}
            for fn in indexed_functions(function_app.app) for binding in fn.get_bindings()]


def settings_named_by_bindings() -> set[str]:
    names = set()
    for binding in function_bindings():
        for value in binding.values():
            if isinstance(value, str):
                names.update(re.findall(r"%([A-Za-z0-9_]+)%", value))
    return names


# ---- files and modules ------------------------------------------------------------------------

def test_every_bicep_file_parses_and_local_modules_exist() -> None:
    files = bicep_files()
    assert "main.bicep" in files and len(files) >= 7
    for relative in files:
        for name, module in parse(relative).get("modules", {}).items():
            if module["type"] == "local":
                target = (INFRA / relative).parent / module["detail"]["path"]
                assert target.is_file(), f"{relative}: module {name} points at missing {target}"


def test_registry_modules_are_pinned_azure_verified_modules() -> None:
    seen = []
    for relative in bicep_files():
        for name, module in parse(relative).get("modules", {}).items():
            if module["type"] == "local":
                continue
            detail = module["detail"]
            assert detail["path"].startswith("avm/res/"), f"{relative}:{name} is not an AVM resource module"
            assert re.fullmatch(r"\d+\.\d+\.\d+", detail["tag"]), f"{relative}:{name} tag {detail['tag']!r}"
            seen.append(detail["path"])
    assert {"avm/res/managed-identity/user-assigned-identity", "avm/res/operational-insights/workspace",
            "avm/res/insights/component"} <= set(seen)


# ---- Service Bus queues from queues.json --------------------------------------------------------

def test_main_loads_queues_json_and_passes_it_to_service_bus() -> None:
    main = parse("main.bicep")
    load = main["variables"]["queueSpec"]["value"]["function"]
    assert load["type"] == "load_json_content" and load["parameters"]["file_path"] == "../schemas/queues.json"
    module = main["modules"]["serviceBus"]
    assert module["detail"]["path"] == "modules/servicebus.bicep"
    assert module["config"]["params"]["queueSpec"] == "queueSpec"


def test_queues_json_holds_the_required_queue_settings() -> None:
    spec = queue_spec()
    for queue in spec["queues"]:
        merged = {**spec["defaults"], **queue}
        # lockDuration: tests/infra/test_host_settings.py (at most PT1M, renewed by the host)
        assert merged["defaultMessageTimeToLive"] == "P14D"
        assert merged["requiresDuplicateDetection"] is True
        assert merged["duplicateDetectionHistoryTimeWindow"] == "P1D"
        assert merged["deadLetteringOnMessageExpiration"] is True
        assert merged["maxDeliveryCount"] == 10
        assert merged["requiresSession"] is False and merged["enablePartitioning"] is False


def test_every_queue_is_deployed_with_every_setting_from_queues_json() -> None:
    spec = queue_spec()
    declaration = resource("modules/servicebus.bicep", "queues")
    assert declaration["type"] == "Microsoft.ServiceBus/namespaces/queues"
    item, array = loop(declaration)
    assert accessor_path(array) == ["queueSpec", "queues"]
    deployed = {}
    for queue in spec["queues"]:
        rendered = evaluate(body(declaration), {"queueSpec": spec, item: queue})
        deployed[rendered["name"]] = rendered["properties"]
    assert set(deployed) == {q["name"] for q in spec["queues"]}
    for queue in spec["queues"]:
        expected = {k: v for k, v in {**spec["defaults"], **queue}.items() if k != "name"}
        assert deployed[queue["name"]] == expected, f"queue {queue['name']} differs from queues.json"


def test_service_bus_is_standard_without_local_auth() -> None:
    namespace = body(resource("modules/servicebus.bicep", "namespace"))
    assert namespace["sku"]["name"] == "Standard"
    assert namespace["properties"]["disableLocalAuth"] is True


# ---- app settings -------------------------------------------------------------------------------

def test_allow_list_names_are_real_and_not_also_set() -> None:
    known = template_settings() | settings_read_by_code()
    for name in NOT_SET_IN_AZURE:
        assert name in known, f"allow-listed {name} is no longer used: drop it from NOT_SET_IN_AZURE"
        assert name not in app_settings(), f"{name} is allow-listed as unset but Bicep sets it"


def test_every_setting_the_app_uses_is_set_in_bicep_or_allow_listed() -> None:
    needed = template_settings() | settings_read_by_code() | settings_named_by_bindings()
    assert {"MARKR_DATABASE_URL", "MARKR_DEAD_LETTER_SWEEP_SCHEDULE"} <= needed  # the scan finds things
    missing = sorted(needed - set(app_settings()) - set(NOT_SET_IN_AZURE))
    assert not missing, f"set these in {FUNCTION_APP} (or allow-list them with a reason): {missing}"


def test_every_bicep_setting_is_one_the_app_knows() -> None:
    known = template_settings() | settings_read_by_code() | set(AZURE_ONLY)
    for name in app_settings():
        if name in known:
            continue
        prefix, _, suffix = name.partition("__")
        assert suffix in IDENTITY_SUFFIXES and (prefix in known or f"{prefix}__{suffix}" in known), (
            f"{FUNCTION_APP} sets {name}, which nothing reads (typo?)")


@pytest.mark.parametrize("prefix", ["AzureWebJobsStorage", "ServiceBusConnection", "VaultStorage"])
def test_identity_connections_use_the_user_assigned_identity(prefix: str) -> None:
    settings = app_settings()
    assert settings[f"{prefix}__credential"] == "managedidentity"
    assert settings[f"{prefix}__clientId"] == "identityClientId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"


def test_every_trigger_connection_has_an_identity_based_setting() -> None:
    settings = app_settings()
    endpoint_suffixes = ("fullyQualifiedNamespace", "accountName", "tableServiceUri", "blobServiceUri",
                         "queueServiceUri")
    connections = {(b["function"], b["connection"]) for b in function_bindings() if b.get("connection")}
    assert connections, "no binding declares a connection: did function_app stop registering triggers?"
    for function, connection in connections:
        assert any(f"{connection}__{s}" in settings for s in endpoint_suffixes), (
            f"{function} uses connection {connection!r} but {FUNCTION_APP} sets no {connection}__<endpoint>")
        assert connection not in settings, f"{connection} must be identity-based, not a connection string"


def test_app_settings_values_match_the_deployment() -> None:
    settings = app_settings()
    assert settings["MARKR_BUS"] == "azure"
    assert settings["MARKR_DATABASE_ENTRA_AUTH"] == "true"
    assert settings["MARKR_DATABASE_URL"] == (
        "postgresql://${identityName}@${postgresHost}:5432/${databaseName}?sslmode=require")
    assert settings["ServiceBusConnection__fullyQualifiedNamespace"] == "serviceBusFullyQualifiedNamespace"
    assert settings["VaultStorage__tableServiceUri"] == "tableEndpoint"
    params = parse(FUNCTION_APP)["parameters"]
    assert settings["MARKR_DB_POOL_MAX"] == {"function": {"type": "string", "parameters": {
        "value_to_convert": "dbPoolMax"}}}
    for value in settings.values():  # identifiers must be declared parameters
        if isinstance(value, str) and re.fullmatch(r"[a-z]+[A-Z][A-Za-z]*", value):  # camelCase = identifier
            assert value in params, f"app setting refers to undeclared {value!r}"


def test_telemetry_is_exported_once_by_our_own_configure_azure_monitor() -> None:
    """shared/telemetry.py calls configure_azure_monitor() itself. PYTHON_ENABLE_OPENTELEMETRY=true only
    lets the worker hand the host's trace context to OpenTelemetry; PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY
    =true would make the worker call configure_azure_monitor() too, and everything would be sent twice."""
    settings = app_settings()
    assert settings["PYTHON_ENABLE_OPENTELEMETRY"] == "true"
    assert "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY" not in settings
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "appInsightsConnectionString"
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"  # the host's own logs go out once, as OpenTelemetry


# ---- the function app, storage, database ---------------------------------------------------------

def test_function_app_is_flex_consumption_python_with_user_assigned_identity() -> None:
    plan = body(resource(FUNCTION_APP, "plan"))
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    site = body(resource(FUNCTION_APP, "site"))
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    auth = config["deployment"]["storage"]["authentication"]
    assert auth["type"] == "UserAssignedIdentity"
    assert site["properties"]["httpsOnly"] is True
    tags = site["tags"]["function"]["parameters"]["arg_2"]
    assert tags == {"'azd-service-name'": "markr"}


def test_storage_has_the_vault_table_and_no_shared_keys() -> None:
    account = body(resource("modules/storage.bicep", "account"))
    assert account["properties"]["allowSharedKeyAccess"] is False
    assert account["properties"]["allowBlobPublicAccess"] is False
    main = parse("main.bicep")["modules"]["storage"]["config"]["params"]
    assert main["vaultTableName"] == "vault"
    assert body(resource("modules/storage.bicep", "vaultTable"))["name"] == "vaultTableName"


def test_postgres_uses_entra_auth_with_the_app_identity_as_admin() -> None:
    server = body(resource("modules/postgres.bicep", "server"))
    assert server["properties"]["authConfig"]["activeDirectoryAuth"] == "Enabled"
    assert server["properties"]["authConfig"]["passwordAuth"] == "Disabled"
    admin = body(resource("modules/postgres.bicep", "appAdmin"))
    assert admin["name"] == "appPrincipalId"
    assert admin["properties"]["principalType"] == "ServicePrincipal"
    params = parse("main.bicep")["modules"]["postgres"]["config"]["params"]
    assert params["databaseName"] == "markr"
    assert accessor_path(params["appPrincipalId"]) == ["identity", "outputs", "principalId"]
    assert accessor_path(params["appPrincipalName"]) == ["identity", "outputs", "name"]


POSTGRES = "modules/postgres.bicep"
# server -> firewall -> app admin -> database -> settings -> operator admin (issue #12): a database
# created before any Entra admin exists is owned by azuresu and the app cannot create its schemas.
POSTGRES_ORDER = ["server", "allowAzure", "appAdmin", "database", "logConnections", "operatorAdmin"]


def test_postgres_resources_deploy_in_one_chain_app_admin_before_database() -> None:
    resources = parse(POSTGRES)["resources"]
    assert set(resources) == set(POSTGRES_ORDER), "a new PostgreSQL resource must join the chain below"
    for child in POSTGRES_ORDER[1:]:
        assert body(resources[child])["parent"] == "server", f"{child} must be a child of the server"
    for before, after in zip(POSTGRES_ORDER[1:-1], POSTGRES_ORDER[2:], strict=True):
        assert depends_on(POSTGRES, after) == [before], (
            f"{after} must dependsOn exactly [{before}] (order: {' -> '.join(POSTGRES_ORDER)})")
    assert "dependsOn" not in body(resources["allowAzure"])  # first after the server (its parent)


@pytest.mark.parametrize(("principal_id", "principal_name", "created"), [
    ("", "", False),
    ("00000000-0000-0000-0000-00000000000a", "", False),  # azd fills the id even when no name is set
    ("", "ops@example.com", False),
    ("00000000-0000-0000-0000-00000000000a", "ops@example.com", True),
])
def test_operator_admin_only_when_both_id_and_name_are_set(principal_id: str, principal_name: str,
                                                           created: bool) -> None:
    module = parse(POSTGRES)
    env = {"operatorPrincipalId": principal_id, "operatorPrincipalName": principal_name}
    env["createOperatorAdmin"] = evaluate(module["variables"]["createOperatorAdmin"]["value"], env)
    declaration = resource(POSTGRES, "operatorAdmin")
    assert evaluate(declaration["config"]["condition"], env) is created
    if created:
        config = body(declaration)
        assert evaluate(config["name"], env) == principal_id
        assert evaluate(config["properties"]["principalName"], env) == principal_name


def test_azd_passes_the_operator_name_from_its_own_variable() -> None:
    azd = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert azd["operatorPrincipalId"]["value"] == "${AZURE_PRINCIPAL_ID=}"
    assert azd["operatorPrincipalName"]["value"] == "${MARKR_OPERATOR_NAME=}"  # empty unless set


ROLE_IDS = {
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": ("Storage Table Data Contributor", "storage"),
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": ("Storage Blob Data Owner", "storage"),
    "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39": ("Azure Service Bus Data Sender", "namespace"),
    "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0": ("Azure Service Bus Data Receiver", "namespace"),
    "090c5cfd-751d-490a-894a-3ce6f1109419": ("Azure Service Bus Data Owner", "namespace"),
}


def test_identity_has_every_role_on_the_right_resource() -> None:
    roles = parse("modules/roles.bicep")
    role_vars = roles["variables"]["roleIds"]["value"]
    granted = {}
    for name, declaration in roles["resources"].items():
        if declaration["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = body(declaration)
        role_var = accessor_path(config["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"])
        role_id = role_vars[role_var[1]]
        assert config["properties"]["principalId"] == "principalId", name
        assert config["properties"]["principalType"] == "ServicePrincipal", name
        granted[role_id] = config["scope"]
    for role_id, (role, scope) in ROLE_IDS.items():
        assert granted.get(role_id) == scope, f"{role} must be granted on {scope}"


# ---- alerts -------------------------------------------------------------------------------------

def test_alert_rules_cover_every_queue() -> None:
    main = parse("main.bicep")["modules"]["alerts"]["config"]["params"]
    assert accessor_path(main["queueNames"]["loop_type"]["detail"]["array_name"]) == ["queueSpec", "queues"]
    assert main["actionGroupId"] == "actionGroupId"
    queue_names = [q["name"] for q in queue_spec()["queues"]]
    expected = {"deadLettered": ("DeadletteredMessages", 0), "backlog": ("ActiveMessages", 1000)}
    for symbol, (metric, threshold) in expected.items():
        declaration = resource("modules/alerts.bicep", symbol)
        assert declaration["type"] == "Microsoft.Insights/metricAlerts"
        item, array = loop(declaration)
        assert array == "queueNames"
        for queue in queue_names:
            rule = evaluate(body(declaration), {item: queue, "activeMessagesThreshold": 1000})
            assert queue in rule["name"]
            (criterion,) = rule["properties"]["criteria"]["allOf"]
            assert criterion["metricName"] == metric
            assert criterion["operator"] == "GreaterThan" and criterion["threshold"] == threshold
            assert criterion["dimensions"] == [{"name": "EntityName", "operator": "Include", "values": [queue]}]
            assert rule["properties"]["actions"] == "actions"
    actions = parse("modules/alerts.bicep")["variables"]["actions"]["value"]
    assert "actionGroupId" in json.dumps(actions)


# ---- parameter files and azd --------------------------------------------------------------------

def required_main_params() -> set[str]:
    params = parse("main.bicep")["parameters"]
    return {name for name, p in params.items() if p.get("default") is None}


def test_required_parameters_are_supplied_by_every_parameter_file() -> None:
    declared = set(parse("main.bicep")["parameters"])
    required = required_main_params()
    assert {"environmentName", "location"} <= required
    azd = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert required <= set(azd) <= declared
    for env in ("dev", "prod"):
        text = (INFRA / f"main.{env}.bicepparam").read_text()
        assert re.search(r"^using 'main\.bicep'$", text, re.M)
        names = set(re.findall(r"^param (\w+) =", text, re.M))
        assert required <= names <= declared, f"main.{env}.bicepparam"
        assert re.search(rf"^param profile = '{env}'$", text, re.M)


def test_azure_yaml_deploys_the_function_app_with_azd() -> None:
    text = (ROOT / "azure.yaml").read_text()
    service = re.search(r"^services:\n  markr:\n((?:    .*\n)+)", text, re.M)
    assert service, "azure.yaml must define services.markr"
    fields = dict(re.findall(r"^    (\w+): (.+)$", service.group(1), re.M))
    assert fields == {"project": ".", "language": "python", "host": "function"}
    assert re.search(r"^  path: infra$", text, re.M) and re.search(r"^  provider: bicep$", text, re.M)


# ---- the vault's key-encryption key (Key Vault) ------------------------------------------------

KEY_VAULT = "modules/keyvault.bicep"


def test_key_vault_uses_rbac_with_purge_protection_and_soft_delete() -> None:
    vault = body(resource(KEY_VAULT, "vault"))["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enablePurgeProtection"] is True
    assert vault["enableSoftDelete"] is True and vault["softDeleteRetentionInDays"] >= 7
    assert "accessPolicies" not in vault  # RBAC only


def test_vault_key_wraps_only_and_rotates_by_policy() -> None:
    key = body(resource(KEY_VAULT, "key"))
    assert key["parent"] == "vault"
    props = key["properties"]
    assert props["kty"] in ("RSA", "RSA-HSM") and props["keySize"] >= 2048
    assert sorted(props["keyOps"]) == ["unwrapKey", "wrapKey"]
    actions = {a["action"]["type"]: a["trigger"] for a in props["rotationPolicy"]["lifetimeActions"]}
    assert "timeAfterCreate" in actions["rotate"], "the key must rotate by itself"
    assert "notify" in actions


def test_app_identity_is_crypto_user_on_the_key_only() -> None:
    module = parse(KEY_VAULT)
    assert module["variables"]["cryptoUserRoleId"]["value"] == "12338af0-0e69-4776-bea7-57ae8d297424"
    grant = body(resource(KEY_VAULT, "cryptoUser"))
    assert grant["scope"] == "key"
    assert grant["properties"]["principalId"] == "principalId"
    assert grant["properties"]["principalType"] == "ServicePrincipal"
    main = parse("main.bicep")["modules"]
    assert accessor_path(main["keyVault"]["config"]["params"]["principalId"]) == ["identity", "outputs", "principalId"]


def test_function_app_gets_the_versionless_key_url() -> None:
    assert app_settings()["MARKR_VAULT_KEY_URL"] == "vaultKeyUrl"
    main = parse("main.bicep")["modules"]["functionApp"]["config"]
    assert accessor_path(main["params"]["vaultKeyUrl"]) == ["keyVault", "outputs", "keyUrl"]
    assert "keyVault" in main["dependsOn"]  # the role exists before the app first wraps a key
    output = parse(KEY_VAULT)["outputs"]["keyUrl"]["value"]
    assert accessor_path(output) == ["key", "properties", "keyUri"]  # keyUri has no version

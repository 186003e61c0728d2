"""The dashboard in Azure: a Static Web App whose origin the function app's CORS admits, and the same
security headers as the local host serves (devhost/static_site.py)."""
from __future__ import annotations

import json
import re

from devhost import static_site
from tests.infra.bicep_model import INFRA, ROOT


def test_the_dashboard_is_a_static_web_app_admitted_by_the_function_app_cors() -> None:
    module = (INFRA / "modules" / "dashboard.bicep").read_text()
    assert re.search(r"^resource \w+ 'Microsoft\.Web/staticSites@[\d-]+' = \{", module, re.M)
    main = (INFRA / "main.bicep").read_text()
    assert "module dashboard 'modules/dashboard.bicep'" in main
    assert "corsAllowedOrigins: ['https://${dashboard.outputs.defaultHostName}']" in main
    app = (INFRA / "modules" / "functionapp.bicep").read_text()
    assert re.search(r"cors: \{ allowedOrigins: corsAllowedOrigins, supportCredentials: false \}", app)


def _directives(policy: str) -> dict[str, str]:
    return {d.split()[0]: " ".join(d.split()[1:]) for d in (p.strip() for p in policy.split(";")) if d}


def test_static_web_apps_serves_the_local_hosts_headers_with_the_api_origin_allowed() -> None:
    config = json.loads((ROOT / "dashboard" / "staticwebapp.config.json").read_text())
    headers = config["globalHeaders"]
    local = static_site.SECURITY_HEADERS
    assert {k: v for k, v in headers.items() if k != "Content-Security-Policy"} == \
        {k: v for k, v in local.items() if k != "Content-Security-Policy"}
    azure, here = _directives(headers["Content-Security-Policy"]), _directives(local["Content-Security-Policy"])
    assert {k: v for k, v in azure.items() if k != "connect-src"} == {k: v for k, v in here.items() if k != "connect-src"}
    assert azure["connect-src"].split() == ["'self'", "https://*.azurewebsites.net", "https://login.microsoftonline.com"]


def test_the_deploy_step_vendors_the_pinned_msal_bundle_and_configures_the_msal_provider() -> None:
    package = json.loads((ROOT / "package.json").read_text())
    lock = json.loads((ROOT / "package-lock.json").read_text())
    pinned = package["devDependencies"]["@azure/msal-browser"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned)  # exact: the deployed library changes only by a commit
    assert lock["packages"]["node_modules/@azure/msal-browser"]["version"] == pinned
    doc = (ROOT / "docs" / "deploy.md").read_text()
    copy = re.search(r"^cp (node_modules/\S+) \"\$OUT/vendor/msal-browser\.min\.js\"$", doc, re.M)
    assert copy, "docs/deploy.md must copy MSAL.js to vendor/msal-browser.min.js"
    assert copy.group(1) == "node_modules/@azure/msal-browser/lib/msal-browser.min.js"
    assert "./vendor/msal-browser.min.js" in (ROOT / "dashboard" / "auth-msal.js").read_text()
    assert '"tokenProvider": "./auth-msal.js"' in doc
    for key in ('"clientId"', '"authority"', '"scopes": ["api://$API_APP/access_as_user"]', '"redirectUri"'):
        assert key in doc

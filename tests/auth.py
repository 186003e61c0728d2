"""Credentials for tests: the suite's own development issuer, and request headers carrying its tokens.

conftest.py puts `auth_env()` into the environment for the whole session, so every test host (the
in-process LocalFunctionHost, `python -m devhost` subprocesses, the pipeline harness) trusts this
issuer. A test asks for the role its request needs:

    request(..., headers={**tests.auth.bearer(Role.READ), ...})   # Results.Submit: vendor TEST_VENDOR
"""
from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from devhost.devissuer import DevIssuer, local_auth_env
from devhost.stack import ROOT
from shared.auth import Role

TEST_VENDOR = "test-vendor"
ISSUER_DIR = ROOT / ".local" / "test" / f"auth-{os.getpid()}"


@cache
def issuer(directory: Path = ISSUER_DIR) -> DevIssuer:
    return DevIssuer.ensure(directory)


def auth_env(directory: Path = ISSUER_DIR) -> dict[str, str]:
    return local_auth_env(directory)


def token(*roles: str, vendor: str | None = None, **claims: object) -> str:
    if Role.SUBMIT in roles and vendor is None:
        vendor = TEST_VENDOR
    return issuer().mint(roles, vendor=vendor, **claims)


def bearer(*roles: str, vendor: str | None = None, **claims: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(*roles, vendor=vendor, **claims)}"}


def role_for(method: str, path: str) -> str:
    """The role a route needs, for test HTTP helpers that attach credentials themselves."""
    path = "/" + path.split("?", 1)[0].strip("/")
    if path.endswith("/api/import") or path == "/import":
        return Role.SUBMIT
    if "/ops/" in path or path.endswith("/health"):
        return Role.ADMIN
    return Role.READ


def with_auth(method: str, path: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    """`headers` plus a token with the role the route needs, unless they already carry credentials."""
    headers = dict(headers or {})
    if not any(k.lower() in ("authorization", "x-markr-api-key") for k in headers):
        headers.update(bearer(role_for(method, path)))
    return headers

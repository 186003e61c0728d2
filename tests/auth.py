"""Credentials for tests: the suite's own development issuer, and request headers carrying its tokens.

conftest.py puts `auth_env()` into the environment for the whole session, so every test host (the
in-process LocalFunctionHost, `python -m devhost` subprocesses, the pipeline harness) trusts this
issuer. A test asks for the role its request needs:

    request(..., headers={**tests.auth.bearer(Role.READ), ...})   # Results.Submit: vendor TEST_VENDOR
"""
from __future__ import annotations

import os
import time
from functools import cache
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

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


# ---- a stand-in for Entra ID (tests of the Azure configuration, key rollover)

ISSUER, AUDIENCE, TENANT = "https://login.microsoftonline.com/t-1/v2.0", "api://markr", "t-1"


class RsaIssuer:
    """A stand-in for Entra ID: RSA keys published as a JWKS (some, to test rollovers), tokens signed with them."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: set[str] = set()
        self.fetches = 0

    def new_key(self, kid: str, publish: bool = True) -> str:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.add(kid)
        return kid

    def jwks(self, _url: str = "") -> dict:
        self.fetches += 1
        keys = []
        for kid in sorted(self.published):
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": keys}

    def token(self, kid: str = "k1", *, alg: str = "RS256", key=None, **overrides) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "tid": TENANT, "iat": now, "nbf": now, "exp": now + 600,
                  "sub": "s-1", "oid": "o-1", "azp": "app-1", "roles": ["Results.Read"], **overrides}
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key or self.keys[kid], algorithm=alg, headers={"kid": kid})

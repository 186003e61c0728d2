"""The edge's Authenticator: a bearer token (Entra ID, or the local development issuer) or a vendor API
key; never both. Built once per process by the composition root from the settings."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from shared.auth.api_keys import HEADER as API_KEY_HEADER
from shared.auth.api_keys import ApiKeyValidator
from shared.auth.jwks import JwksCache
from shared.auth.model import VENDOR_NAME, AuthenticationFailed, Principal
from shared.auth.port import VendorDirectory
from shared.auth.tokens import TokenValidator

log = logging.getLogger(__name__)
DEV_ISSUER = "urn:markr:dev-issuer"  # the local development issuer (devhost/devissuer.py)
VENDOR_CACHE_SECONDS = 60.0


def entra_issuer(tenant_id: str) -> str:
    return f"https://login.microsoftonline.com/{tenant_id}/v2.0"


def entra_jwks_url(tenant_id: str) -> str:
    return f"https://login.microsoftonline.com/{tenant_id}/discovery/v2.0/keys"


class NotConfigured:
    """No issuer configured: every token is refused (fail closed), with the reason in the log."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def validate(self, token: str) -> dict[str, Any]:
        log.error("bearer token refused: %s", self.reason)
        raise AuthenticationFailed("this API accepts no bearer tokens: its token issuer is not configured")


class EdgeAuthenticator:
    def __init__(self, tokens: TokenValidator | NotConfigured, keys: ApiKeyValidator,
                 directory: VendorDirectory) -> None:
        self.tokens = tokens
        self.keys = keys
        self.directory = directory
        self._vendors: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def authenticate(self, headers: Mapping[str, str]) -> Principal | None:
        lowered = {k.lower(): v for k, v in headers.items()}
        authorization = lowered.get("authorization", "").strip()
        api_key = lowered.get(API_KEY_HEADER.lower(), "").strip()
        if authorization and api_key:
            raise AuthenticationFailed(f"send either a bearer token or {API_KEY_HEADER}, not both")
        if api_key:
            return self.keys.validate(api_key)
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("the Authorization header must be 'Bearer <access token>'")
        return self._principal(self.tokens.validate(token.strip()))

    def _principal(self, claims: dict[str, Any]) -> Principal:
        roles = claims.get("roles") or []
        if isinstance(roles, str):
            roles = [roles]
        client_id = claims.get("azp") or claims.get("appid")
        subject = str(claims.get("oid") or claims.get("sub") or client_id or "unknown")
        return Principal(subject, frozenset(str(r) for r in roles), vendor=self._vendor(claims, client_id),
                         client_id=client_id)

    def _vendor(self, claims: dict[str, Any], client_id: str | None) -> str | None:
        """The `vendor` claim if the issuer put one in; else the vendor registered for the calling app."""
        named = claims.get("vendor")
        if isinstance(named, str) and VENDOR_NAME.fullmatch(named):
            return named
        if not client_id or "Results.Submit" not in (claims.get("roles") or []):
            return None
        now = time.monotonic()
        with self._lock:
            cached = self._vendors.get(client_id)
        if cached and now - cached[0] < VENDOR_CACHE_SECONDS:
            return cached[1]
        vendor = self.directory.vendor_for_app(str(client_id))
        with self._lock:
            self._vendors[client_id] = (now, vendor)
        return vendor


def build_authenticator(settings: Any, directory: VendorDirectory) -> EdgeAuthenticator:
    """From the MARKR_AUTH_* settings (shared/config.py)."""
    tenant, issuer, jwks_url = settings.auth_tenant_id, settings.auth_issuer, settings.auth_jwks_url
    if tenant:
        if issuer == DEV_ISSUER:  # e.g. a local settings file from the template, with a tenant added
            log.warning("MARKR_AUTH_TENANT_ID is set: the development issuer is ignored; Entra ID's is used")
            issuer = ""
        issuer = issuer or entra_issuer(tenant)
        jwks_url = jwks_url or entra_jwks_url(tenant)
    tokens: TokenValidator | NotConfigured
    if not issuer or not jwks_url or not settings.auth_audiences:
        tokens = NotConfigured("set MARKR_AUTH_TENANT_ID (Entra ID) or MARKR_AUTH_ISSUER, MARKR_AUTH_JWKS_URL "
                               "and MARKR_AUTH_AUDIENCE")
    else:
        tokens = TokenValidator(issuer=issuer, audiences=settings.auth_audiences, tenant_id=tenant,
                                keys=JwksCache(jwks_url))
    return EdgeAuthenticator(tokens, ApiKeyValidator(directory), directory)

"""The issuer's signing keys (a JWKS document), fetched once and cached.

An unknown `kid` means the issuer may have rolled its keys over: the document is fetched again, but
at most once per `min_refresh_seconds` for that reason, so a stream of made-up kids cannot turn every
request into a fetch. The keys are also fetched again once they are `max_age_seconds` old. A failed
fetch keeps the keys already known; with none known it is AuthUnavailable (503), not a 401.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from jwt import PyJWK

from shared.auth.model import AuthUnavailable

log = logging.getLogger(__name__)
Fetch = Callable[[str], dict[str, Any]]
# Asymmetric algorithms only, per key type: a JWKS entry can never make an HMAC (HS*) or `none` key.
_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


def fetch_json(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET the document (https in Azure; http or file: for the local development issuer)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - URL from settings
        return json.loads(response.read())


class SigningKey:
    def __init__(self, jwk: dict[str, Any]) -> None:
        kty = jwk.get("kty")
        if kty == "RSA":
            allowed: tuple[str, ...] = _RSA_ALGORITHMS
        elif kty == "EC" and jwk.get("crv") in _EC_ALGORITHMS:
            allowed = (_EC_ALGORITHMS[jwk["crv"]],)
        else:
            raise ValueError(f"unsupported key type {kty!r}")
        if jwk.get("alg"):
            allowed = tuple(a for a in allowed if a == jwk["alg"])
        if not allowed:
            raise ValueError(f"alg {jwk['alg']!r} does not fit a {kty} key")
        self.algorithms = frozenset(allowed)
        self.key = PyJWK(jwk, algorithm=allowed[0]).key


def parse_jwks(document: dict[str, Any]) -> dict[str, SigningKey]:
    keys = {}
    for jwk in document.get("keys", []):
        if not isinstance(jwk, dict) or not jwk.get("kid") or jwk.get("use", "sig") != "sig":
            continue
        try:
            keys[str(jwk["kid"])] = SigningKey(jwk)
        except Exception as exc:  # noqa: BLE001 - one odd entry must not hide the others
            log.warning("JWKS key %s skipped: %s", jwk.get("kid"), exc)
    return keys


class JwksCache:
    def __init__(self, url: str, *, fetch: Fetch = fetch_json, clock: Callable[[], float] = time.monotonic,
                 max_age_seconds: float = 3600.0, min_refresh_seconds: float = 60.0) -> None:
        self.url = url
        self._fetch = fetch
        self._clock = clock
        self._max_age = max_age_seconds
        self._min_refresh = min_refresh_seconds
        self._keys: dict[str, SigningKey] | None = None
        self._fetched_at = 0.0
        self._kid_refresh_at: float | None = None
        self._lock = threading.Lock()

    def get(self, kid: str) -> SigningKey | None:
        with self._lock:
            if self._keys is None or self._clock() - self._fetched_at >= self._max_age:
                self._load()
            assert self._keys is not None
            if kid in self._keys:
                return self._keys[kid]
            now = self._clock()
            if self._kid_refresh_at is not None and now - self._kid_refresh_at < self._min_refresh:
                return None  # refreshed for an unknown kid moments ago: do not fetch again
            self._kid_refresh_at = now
            log.info("unknown signing key %r: fetching the issuer's keys again", kid[:64])
            self._load()
            return self._keys.get(kid)

    def _load(self) -> None:
        try:
            keys = parse_jwks(self._fetch(self.url))
        except Exception as exc:  # noqa: BLE001 - unreachable issuer, bad JSON: keep what we have
            if self._keys is None:
                raise AuthUnavailable(f"the token issuer's keys could not be fetched: {type(exc).__name__}") from exc
            log.warning("refreshing the issuer's keys from %s failed; keeping %d known key(s): %s",
                        self.url, len(self._keys), exc)
            self._fetched_at = self._clock()  # try again after max_age, not on every request
            return
        self._keys = keys
        self._fetched_at = self._clock()

"""Access-token validation (PyJWT): signature against the issuer's JWKS, iss, aud, exp/nbf, roles.

Only asymmetric algorithms that fit the signing key are accepted: `alg: none` and the HS family are
refused before any key is looked at (an HS256 token "signed" with the public key is the classic
confusion attack).

A token that passed every check is remembered per process (keyed by the SHA-256 of the whole token, so a
token differing in any byte, its signature included, is verified afresh) for at most
TOKEN_CACHE_SECONDS and never past its exp: ES256 verification costs ~0.2 ms of CPU on every request.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jwt

from shared.auth.jwks import JwksCache
from shared.auth.model import AuthenticationFailed

LEEWAY_SECONDS = 60  # clock skew allowed on exp, nbf and iat
ACCEPTED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
TOKEN_CACHE_SECONDS = 60.0  # bounds how long a removed signing key keeps its tokens' cache entries
TOKEN_CACHE_SIZE = 1024


class _Verified(NamedTuple):
    claims: dict[str, Any]
    kid: str
    key: Any  # the SigningKey that verified the signature
    expires_at: float  # exp + leeway: from then on PyJWT would refuse the token as expired
    until: float  # min(expires_at, verified at + TOKEN_CACHE_SECONDS)


class TokenValidator:
    def __init__(self, *, issuer: str, audiences: Sequence[str], keys: JwksCache, tenant_id: str = "",
                 leeway: float = LEEWAY_SECONDS, clock: Callable[[], float] = time.time,
                 cache_seconds: float = TOKEN_CACHE_SECONDS, cache_size: int = TOKEN_CACHE_SIZE) -> None:
        if not issuer or not audiences:
            raise ValueError("an issuer and at least one audience are required")
        self.issuer = issuer
        self.audiences = list(audiences)
        self.keys = keys
        self.tenant_id = tenant_id
        self.leeway = leeway
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._verified: OrderedDict[bytes, _Verified] = OrderedDict()
        self._lock = threading.Lock()

    def validate(self, token: str) -> dict[str, Any]:
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        with self._lock:
            hit = self._verified.get(digest)
            if hit is not None and (now < hit.until or now >= hit.expires_at):
                self._verified.move_to_end(digest)  # an expired one stays, to be refused, until evicted
            elif hit is not None:
                del self._verified[digest]
        if hit is not None:
            if now >= hit.expires_at:
                raise AuthenticationFailed("the token has expired")
            # the same key object: still published, and not replaced by a refresh of the issuer's keys
            if now < hit.until and self.keys.get(hit.kid) is hit.key:
                return dict(hit.claims)
        claims, kid, key = self._verify(token)
        if self._cache_size > 0:
            expires_at = float(claims["exp"]) + self.leeway
            entry = _Verified(dict(claims), kid, key, expires_at, min(expires_at, now + self._cache_seconds))
            with self._lock:
                self._verified[digest] = entry
                self._verified.move_to_end(digest)
                while len(self._verified) > self._cache_size:
                    self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str) -> tuple[dict[str, Any], str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthenticationFailed("the bearer token is not a well-formed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ACCEPTED_ALGORITHMS:
            raise AuthenticationFailed(f"the token's algorithm {str(alg)[:20]!r} is not accepted",
                                       f"alg={str(alg)[:20]!r}")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationFailed("the token names no signing key (kid)")
        key = self.keys.get(kid)
        if key is None:
            raise AuthenticationFailed("the token's signing key is not one of the issuer's keys", f"kid={kid[:64]!r}")
        if alg not in key.algorithms:
            raise AuthenticationFailed(f"the token's algorithm {alg} does not fit its signing key", f"kid={kid[:64]!r}")
        try:
            claims = jwt.decode(token, key.key, algorithms=[alg], audience=self.audiences, issuer=self.issuer,
                                leeway=self.leeway, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationFailed("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationFailed("the token is not meant for this API (audience)") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationFailed("the token comes from another issuer", f"kid={kid[:64]!r}") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationFailed("the token's signature is not valid", f"kid={kid[:64]!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationFailed(f"the token has no {exc.claim} claim") from None
        except jwt.InvalidTokenError as exc:
            raise AuthenticationFailed(f"the token is not valid: {type(exc).__name__}") from None
        if self.tenant_id and claims.get("tid", self.tenant_id) != self.tenant_id:
            raise AuthenticationFailed("the token belongs to another tenant")
        return claims, kid, key

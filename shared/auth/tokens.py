"""Access-token validation (PyJWT): signature against the issuer's JWKS, iss, aud, exp/nbf, roles.

Only asymmetric algorithms that fit the signing key are accepted: `alg: none` and the HS family are
refused before any key is looked at (an HS256 token "signed" with the public key is the classic
confusion attack).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jwt

from shared.auth.jwks import JwksCache
from shared.auth.model import AuthenticationFailed

LEEWAY_SECONDS = 60  # clock skew allowed on exp, nbf and iat
ACCEPTED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})


class TokenValidator:
    def __init__(self, *, issuer: str, audiences: Sequence[str], keys: JwksCache, tenant_id: str = "",
                 leeway: float = LEEWAY_SECONDS) -> None:
        if not issuer or not audiences:
            raise ValueError("an issuer and at least one audience are required")
        self.issuer = issuer
        self.audiences = list(audiences)
        self.keys = keys
        self.tenant_id = tenant_id
        self.leeway = leeway

    def validate(self, token: str) -> dict[str, Any]:
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
        return claims

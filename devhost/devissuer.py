"""The local development token issuer: an EC P-256 signing key generated on first start under
.local/run/auth (MARKR_DEV_ISSUER_DIR elsewhere), its JWKS served by the local host at
/.well-known/jwks.json, and tokens minted with it (`markr-ops token`, tests, benchmarks).

Its tokens look like Entra ID access tokens (iss, aud, exp, nbf, roles, azp, and `vendor` for a
vendor) and the app checks them with the same code as Entra's. Their issuer is DEV_ISSUER, which the
app never accepts once MARKR_AUTH_TENANT_ID (the Azure issuer) is configured. Never deployed.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devhost.stack import ROOT
from shared.auth.authenticator import DEV_ISSUER

log = logging.getLogger("devhost.auth")
DEV_AUDIENCE = "api://markr-local"
JWKS_PATH = "/.well-known/jwks.json"
DIR_SETTING = "MARKR_DEV_ISSUER_DIR"
DEFAULT_DIR = ROOT / ".local" / "run" / "auth"
_KEY_FILE, _JWKS_FILE = "signing-key.pem", "jwks.json"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issuer_dir() -> Path:
    return Path(os.environ.get(DIR_SETTING) or DEFAULT_DIR)


class DevIssuer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.private_key = serialization.load_pem_private_key((directory / _KEY_FILE).read_bytes(), None)
        numbers = self.private_key.public_key().public_numbers()
        self.public_jwk = {"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                           "x": _b64(numbers.x.to_bytes(32, "big")), "y": _b64(numbers.y.to_bytes(32, "big"))}
        # RFC 7638 thumbprint as the key id
        canonical = json.dumps({k: self.public_jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
        self.kid = _b64(hashlib.sha256(canonical.encode()).digest())
        self.public_jwk["kid"] = self.kid

    @classmethod
    def ensure(cls, directory: Path | None = None) -> DevIssuer:
        """The issuer in `directory` (default: issuer_dir()), its key generated if there is none yet."""
        directory = directory or issuer_dir()
        key_file = directory / _KEY_FILE
        if not key_file.exists():
            directory.mkdir(parents=True, exist_ok=True)
            pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            tmp = directory / f".{_KEY_FILE}.{os.getpid()}"
            tmp.write_bytes(pem)
            tmp.chmod(0o600)
            try:
                os.link(tmp, key_file)  # first writer wins when two processes start at once
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            log.info("development issuer: new signing key in %s", directory)
        issuer = cls(directory)
        jwks = json.dumps(issuer.jwks())
        jwks_file = directory / _JWKS_FILE
        if not jwks_file.exists() or jwks_file.read_text() != jwks:
            tmp = directory / f".{_JWKS_FILE}.{os.getpid()}"
            tmp.write_text(jwks)
            tmp.replace(jwks_file)
        return issuer

    @property
    def jwks_file_url(self) -> str:
        return (self.directory / _JWKS_FILE).resolve().as_uri()

    def jwks(self) -> dict:
        return {"keys": [self.public_jwk]}

    def mint(self, roles: Iterable[str], *, vendor: str | None = None, expires_in: float = 3600.0,
             audience: str = DEV_AUDIENCE, issuer: str = DEV_ISSUER, subject: str | None = None,
             not_before: float | None = None, **claims: object) -> str:
        """An access token shaped like Entra's app tokens (roles, azp); `vendor` names the submitting vendor."""
        now = int(time.time())
        client = f"dev-app-{vendor}" if vendor else "dev-app"
        payload = {"iss": issuer, "aud": audience, "iat": now, "nbf": int(not_before if not_before is not None
                                                                        else now), "exp": int(now + expires_in),
                   "sub": subject or client, "oid": subject or client, "azp": client, "roles": sorted(set(roles)),
                   "jti": str(uuid.uuid4()), **({"vendor": vendor} if vendor else {}), **claims}
        return jwt.encode(payload, self.private_key, algorithm="ES256", headers={"kid": self.kid})


def local_auth_env(directory: Path, jwks_url: str | None = None) -> dict[str, str]:
    """App settings that make the app trust the development issuer in `directory` (tests, benchmarks)."""
    issuer = DevIssuer.ensure(directory)
    return {"MARKR_AUTH_TENANT_ID": "", "MARKR_AUTH_ISSUER": DEV_ISSUER, "MARKR_AUTH_AUDIENCE": DEV_AUDIENCE,
            "MARKR_AUTH_JWKS_URL": jwks_url or issuer.jwks_file_url, DIR_SETTING: str(directory)}


def prepare(port: int) -> DevIssuer | None:
    """Once per local host (the parent, before workers start): with no Entra tenant configured, fill in
    the development issuer's settings that are empty and make sure its key exists. The app fetches the
    JWKS from this host's own /.well-known/jwks.json (or the key file when the port is not known yet)."""
    if os.environ.get("MARKR_AUTH_TENANT_ID", "").strip():
        log.info("token issuer: Entra ID tenant %s (development tokens are refused)",
                 os.environ["MARKR_AUTH_TENANT_ID"])
        return None
    if not os.environ.get("MARKR_AUTH_ISSUER", "").strip():
        os.environ["MARKR_AUTH_ISSUER"] = DEV_ISSUER
    if os.environ["MARKR_AUTH_ISSUER"].strip() != DEV_ISSUER:
        return None
    if not os.environ.get("MARKR_AUTH_AUDIENCE", "").strip():
        os.environ["MARKR_AUTH_AUDIENCE"] = DEV_AUDIENCE
    issuer = DevIssuer.ensure()
    os.environ.setdefault(DIR_SETTING, str(issuer.directory))
    if not os.environ.get("MARKR_AUTH_JWKS_URL", "").strip():
        os.environ["MARKR_AUTH_JWKS_URL"] = (f"http://127.0.0.1:{port}{JWKS_PATH}" if port
                                             else issuer.jwks_file_url)
    return issuer


def well_known(path: str) -> bytes | None:
    """The local host's answer for GET `path` if it is the development issuer's JWKS, else None."""
    if path.rstrip("/") != JWKS_PATH or os.environ.get("MARKR_AUTH_ISSUER", "").strip() != DEV_ISSUER:
        return None
    jwks_file = issuer_dir() / _JWKS_FILE
    try:
        return jwks_file.read_bytes()
    except OSError:
        return None


def banner(base_url: str) -> list[str]:
    """What `scripts/up` prints about credentials: how to get a token, and the dashboard's URL."""
    if os.environ.get("MARKR_AUTH_ISSUER", "").strip() != DEV_ISSUER or os.environ.get("MARKR_AUTH_TENANT_ID"):
        return ["", "Tokens: the Entra ID issuer is configured; development tokens are refused."]
    root = base_url.removesuffix("/api")
    read = DevIssuer.ensure().mint(["Results.Read"], expires_in=12 * 3600, audience=_audience(),
                                   subject="dashboard")
    return ["", "Every route needs a token (development issuer; keys in " + str(issuer_dir()) + "):",
            "    TOKEN=$(.venv/bin/markr-ops token --role Results.Submit --vendor acme)   "
            "# or Results.Read, Ops.Admin",
            f"    curl -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: text/xml+markr' "
            f"--data-binary @tests/data/sample_results.xml {base_url}/import",
            "    vendors' API keys: .venv/bin/markr-ops vendors add NAME  (header X-Markr-Api-Key)",
            "", f"Dashboard (Results.Read for 12 h): {root}/#token={read}"]


def _audience() -> str:
    audiences = [a.strip() for a in os.environ.get("MARKR_AUTH_AUDIENCE", "").split(",") if a.strip()]
    return audiences[0] if audiences else DEV_AUDIENCE

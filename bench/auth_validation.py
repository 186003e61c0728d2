"""What authentication costs per request, in-process (no HTTP, no database): validating a development
(ES256) and an Entra-like (RS256, 2048-bit) access token with cached keys, and checking an API key
against an in-memory directory (sha256 + constant-time compare; the real one adds one indexed
PostgreSQL read).

    .venv/bin/python bench/auth_validation.py [--n 5000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devhost.devissuer import DEV_AUDIENCE, DEV_ISSUER, DevIssuer  # noqa: E402
from shared.auth.api_keys import ApiKeyValidator  # noqa: E402
from shared.auth.jwks import JwksCache  # noqa: E402
from shared.auth.tokens import TokenValidator  # noqa: E402
from tests.auth import AUDIENCE, ISSUER, RsaIssuer  # noqa: E402
from tests.fakes import FakeVendors  # noqa: E402


def per_call(check, n: int) -> float:
    check()
    started = time.perf_counter()
    for _ in range(n):
        check()
    return 1e6 * (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as work:
        dev = DevIssuer.ensure(Path(work))
        es256 = TokenValidator(issuer=DEV_ISSUER, audiences=[DEV_AUDIENCE], keys=JwksCache(dev.jwks_file_url))
        token = dev.mint(["Results.Read"])
        print(f"ES256 token (development issuer): {per_call(lambda: es256.validate(token), n):.0f} µs each")
    entra = RsaIssuer()
    entra.new_key("k1")
    rs256 = TokenValidator(issuer=ISSUER, audiences=[AUDIENCE], keys=JwksCache("jwks", fetch=entra.jwks))
    rsa_token = entra.token()
    print(f"RS256 token (Entra-like, 2048-bit): {per_call(lambda: rs256.validate(rsa_token), n):.0f} µs each")
    vendors = FakeVendors()
    key = vendors.add_key("acme")
    keys = ApiKeyValidator(vendors)
    print(f"API key (in-memory directory): {per_call(lambda: keys.validate(key), n):.1f} µs each")


if __name__ == "__main__":
    main()

"""Authentication with fakes: tokens against an in-memory JWKS, API keys against an in-memory directory,
and the route decorator's answers."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from datetime import UTC, datetime, timedelta

import azure.functions as func
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from functions.auth import requires
from shared import bootstrap
from shared.auth import ANONYMOUS, AuthenticationFailed, AuthUnavailable, Principal, Role
from shared.auth.api_keys import ApiKeyValidator, key_id_of
from shared.auth.authenticator import DEV_ISSUER, EdgeAuthenticator, NotConfigured, build_authenticator
from shared.auth.jwks import JwksCache
from shared.auth.tokens import TokenValidator
from shared.config import Settings
from tests.auth import AUDIENCE, ISSUER, TENANT, RsaIssuer
from tests.fakes import FakeVendors


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer() -> RsaIssuer:
    issuer = RsaIssuer()
    issuer.new_key("k1")
    return issuer


def validator(issuer: RsaIssuer, clock: Clock | None = None) -> TokenValidator:
    keys = JwksCache("https://issuer/keys", fetch=issuer.jwks, clock=clock or Clock())
    return TokenValidator(issuer=ISSUER, audiences=[AUDIENCE, "client-id"], keys=keys, tenant_id=TENANT)


def refused(check, token: str) -> str:
    with pytest.raises(AuthenticationFailed) as caught:
        check(token)
    return caught.value.description


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---- tokens

def test_a_good_token_gives_its_claims_and_the_keys_are_fetched_once(issuer):
    check = validator(issuer).validate
    for _ in range(3):
        assert check(issuer.token())["roles"] == ["Results.Read"]
    assert check(issuer.token(aud="client-id"))["aud"] == "client-id"  # either accepted audience
    assert issuer.fetches == 1


@pytest.mark.parametrize(("overrides", "why"), [
    ({"exp": -120}, "expired"),  # seconds from now (computed when the test runs)
    ({"nbf": 300}, "not valid yet"),
    ({"aud": "api://someone-else"}, "audience"),
    ({"iss": "https://login.microsoftonline.com/other/v2.0"}, "another issuer"),
    ({"iss": DEV_ISSUER}, "another issuer"),
    ({"tid": "another-tenant"}, "another tenant"),
    ({"exp": None}, "no exp claim"),
])
def test_claims_are_checked(issuer, overrides, why):
    overrides = {k: int(time.time()) + v if k in ("exp", "nbf") and v is not None else v for k, v in overrides.items()}
    assert why in refused(validator(issuer).validate, issuer.token(**overrides))


def test_a_small_clock_skew_is_tolerated(issuer):
    check = validator(issuer).validate
    assert check(issuer.token(exp=int(time.time()) - 20, nbf=int(time.time()) + 20))


def test_a_token_signed_by_another_key_under_a_known_kid_has_a_bad_signature(issuer):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "signature" in refused(validator(issuer).validate, issuer.token(key=stranger))


def test_alg_none_is_refused(issuer):
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "k1"}).encode())
    payload = _b64(json.dumps(jwt.decode(issuer.token(), options={"verify_signature": False})).encode())
    assert "algorithm 'none'" in refused(validator(issuer).validate, f"{header}.{payload}.")


def test_hs256_signed_with_the_public_key_is_refused(issuer):
    public_pem = issuer.keys["k1"].public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    payload = _b64(json.dumps(jwt.decode(issuer.token(), options={"verify_signature": False})).encode())
    signature = _b64(hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    assert "algorithm 'HS256'" in refused(validator(issuer).validate, f"{header}.{payload}.{signature}")
    assert issuer.fetches == 0  # refused before any key was looked up


def test_an_algorithm_that_does_not_fit_the_key_is_refused(issuer):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    assert "does not fit" in refused(validator(issuer).validate, issuer.token(alg="ES256", key=ec_key))


def test_garbage_and_tokens_without_kid_are_refused(issuer):
    check = validator(issuer).validate
    assert "well-formed" in refused(check, "not-a-jwt")
    no_kid = jwt.encode({"iss": ISSUER}, issuer.keys["k1"], algorithm="RS256")
    assert "kid" in refused(check, no_kid)


def cached_validator(issuer: RsaIssuer, wall: Clock, **kwargs) -> TokenValidator:
    keys = JwksCache("https://issuer/keys", fetch=issuer.jwks, clock=Clock())
    return TokenValidator(issuer=ISSUER, audiences=[AUDIENCE], keys=keys, tenant_id=TENANT, clock=wall, **kwargs)


def counting_decode(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = jwt.decode

    def decode(token, *args, **kwargs):
        calls.append(token)
        return real(token, *args, **kwargs)
    monkeypatch.setattr("shared.auth.tokens.jwt.decode", decode)
    return calls


def test_a_verified_token_is_remembered_until_the_cache_ttl_then_verified_again(issuer, monkeypatch):
    calls = counting_decode(monkeypatch)
    wall = Clock()
    wall.now = time.time()
    check = cached_validator(issuer, wall, cache_seconds=30).validate
    token = issuer.token()
    claims = check(token)
    claims["roles"] = ["Results.Admin"]  # a caller changing its copy does not change what is remembered
    assert check(token)["roles"] == ["Results.Read"]
    assert len(calls) == 1
    wall.now += 31
    assert check(token)["roles"] == ["Results.Read"]
    assert len(calls) == 2


def test_a_remembered_token_is_refused_once_expired(issuer, monkeypatch):
    calls = counting_decode(monkeypatch)
    wall = Clock()
    wall.now = time.time()
    exp = int(wall.now) + 10
    check = cached_validator(issuer, wall, cache_seconds=3600).validate
    token = issuer.token(exp=exp)
    assert check(token)
    wall.now = exp + 59  # within the clock-skew leeway: still good, from the cache
    assert check(token)
    wall.now = exp + 61
    assert "expired" in refused(check, token)
    assert "expired" in refused(check, token)
    assert len(calls) == 1  # refused by the cache's own exp check, not by a fresh verification


def test_a_token_whose_signature_was_never_verified_is_not_taken_from_the_cache(issuer, monkeypatch):
    check = validator(issuer).validate
    token = issuer.token()
    assert check(token)
    head, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert "signature" in refused(check, f"{head}.{payload}.{flipped}")  # same claims, other signature
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = issuer.token(key=stranger)
    for _ in range(2):  # a refusal is not remembered as a success either
        assert "signature" in refused(check, forged)


def test_a_remembered_token_is_verified_again_when_its_key_is_withdrawn(issuer):
    wall = Clock()
    wall.now = time.time()
    keys_clock = Clock()
    keys = JwksCache("https://issuer/keys", fetch=issuer.jwks, clock=keys_clock, max_age_seconds=100)
    check = TokenValidator(issuer=ISSUER, audiences=[AUDIENCE], keys=keys, tenant_id=TENANT, clock=wall).validate
    token = issuer.token()
    assert check(token)
    issuer.published.discard("k1")
    keys_clock.now += 101  # the issuer's keys are fetched again: k1 is gone
    assert "not one of the issuer's keys" in refused(check, token)


def test_the_cache_is_bounded(issuer, monkeypatch):
    calls = counting_decode(monkeypatch)
    wall = Clock()
    wall.now = time.time()
    validator_ = cached_validator(issuer, wall, cache_size=2)
    first, second, third = (issuer.token(sub=f"s{i}") for i in range(3))
    for token in (first, second, third, third, second):
        validator_.validate(token)
    assert len(calls) == 3
    validator_.validate(first)  # the least recently used one was dropped
    assert len(calls) == 4
    assert len(validator_._verified) == 2


def test_an_unknown_kid_refetches_the_keys_once_then_waits_before_fetching_again(issuer):
    clock = Clock()
    check = validator(issuer, clock).validate
    check(issuer.token())
    issuer.new_key("k2")  # rollover: the issuer publishes a new key and signs with it
    assert check(issuer.token("k2"))
    assert issuer.fetches == 2
    issuer.new_key("k3", publish=False)  # a kid nobody publishes: one refresh per minute at most
    for _ in range(5):
        assert "not one of the issuer's keys" in refused(check, issuer.token("k3"))
    assert issuer.fetches == 2  # the k2 refresh was moments ago
    clock.now += 61
    issuer.published.add("k3")
    assert check(issuer.token("k3"))
    assert issuer.fetches == 3


def test_keys_are_fetched_again_when_old_and_a_failed_fetch_keeps_the_known_keys(issuer):
    clock = Clock()
    calls = {"fail": False}

    def fetch(url):
        if calls["fail"]:
            raise OSError("issuer unreachable")
        return issuer.jwks(url)

    keys = JwksCache("https://issuer/keys", fetch=fetch, clock=clock)
    check = TokenValidator(issuer=ISSUER, audiences=[AUDIENCE], keys=keys).validate
    check(issuer.token())
    calls["fail"] = True
    clock.now += 3601
    assert check(issuer.token())  # stale, refetch failed: the known keys still work


def test_no_keys_at_all_is_unavailable_not_unauthorized(issuer):
    def fetch(url):
        raise OSError("issuer unreachable")

    check = TokenValidator(issuer=ISSUER, audiences=[AUDIENCE], keys=JwksCache("https://x", fetch=fetch)).validate
    with pytest.raises(AuthUnavailable):
        check(issuer.token())


def test_symmetric_keys_in_a_jwks_are_ignored(issuer):
    def fetch(url):
        return {"keys": [{"kty": "oct", "kid": "k1", "k": _b64(b"secret")}]}

    check = TokenValidator(issuer=ISSUER, audiences=[AUDIENCE], keys=JwksCache("https://x", fetch=fetch)).validate
    assert "not one of the issuer's keys" in refused(check, issuer.token())


# ---- API keys

def test_a_good_key_is_the_vendor_and_its_use_is_recorded_at_most_once_a_minute():
    vendors = FakeVendors()
    key = vendors.add_key("acme")
    principal = ApiKeyValidator(vendors).validate(key)
    assert (principal.vendor, principal.roles, principal.method) == ("acme", {"Results.Submit"}, "api-key")
    assert vendors.touched == [key_id_of(key)]
    recent = FakeVendors()
    key = recent.add_key("acme", last_used_at=datetime.now(UTC) - timedelta(seconds=10))
    ApiKeyValidator(recent).validate(key)
    assert recent.touched == []


def test_wrong_unknown_revoked_and_malformed_keys_are_refused_without_the_secret(caplog):
    vendors = FakeVendors()
    key = vendors.add_key("acme")
    revoked = vendors.add_key("acme", active=False)
    check = ApiKeyValidator(vendors).validate
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    unknown = "mk_000000000000_" + key.split("_", 2)[2]
    for bad in (wrong, unknown, revoked):
        with pytest.raises(AuthenticationFailed) as caught:
            check(bad)
        assert bad.split("_", 2)[2] not in caught.value.description + caught.value.detail
    assert "malformed" in refused(check, "hunter2")
    assert vendors.touched == []


# ---- the edge authenticator

def edge(issuer: RsaIssuer, vendors: FakeVendors | None = None) -> EdgeAuthenticator:
    vendors = vendors or FakeVendors()
    return EdgeAuthenticator(validator(issuer), ApiKeyValidator(vendors), vendors)


def test_headers_choose_the_credential(issuer):
    vendors = FakeVendors()
    key = vendors.add_key("acme")
    auth = edge(issuer, vendors)
    assert auth.authenticate({}) is None
    assert auth.authenticate({"x-markr-api-key": key}).vendor == "acme"
    assert auth.authenticate({"AUTHORIZATION": f"bearer {issuer.token()}"}).roles == {"Results.Read"}
    with pytest.raises(AuthenticationFailed, match="not both"):
        auth.authenticate({"Authorization": f"Bearer {issuer.token()}", "X-Markr-Api-Key": key})
    with pytest.raises(AuthenticationFailed, match="Bearer"):
        auth.authenticate({"Authorization": "Basic dXNlcjpwYXNz"})


def test_a_vendor_is_its_vendor_claim_or_its_registered_application(issuer):
    vendors = FakeVendors()
    vendors.apps["app-acme"] = "acme"
    auth = edge(issuer, vendors)
    submit = ["Results.Submit"]
    assert auth.authenticate({"Authorization": f"Bearer {issuer.token(roles=submit, vendor='beta')}"}).vendor == "beta"
    for _ in range(3):
        principal = auth.authenticate({"Authorization": f"Bearer {issuer.token(roles=submit, azp='app-acme')}"})
        assert (principal.vendor, principal.client_id) == ("acme", "app-acme")
    assert vendors.lookups == 1  # cached for a minute
    v1 = issuer.token(roles=submit, azp=None, appid="app-acme")  # v1 tokens name the client in appid
    assert auth.authenticate({"Authorization": f"Bearer {v1}"}).vendor == "acme"
    stranger = auth.authenticate({"Authorization": f"Bearer {issuer.token(roles=submit, azp='app-x')}"})
    assert stranger.vendor is None
    bad_name = auth.authenticate({"Authorization": f"Bearer {issuer.token(roles=submit, vendor='A/B', azp='x')}"})
    assert bad_name.vendor is None


def settings(**auth) -> Settings:
    return Settings(database_url="", database_entra_auth=False, bus="local", service_bus_connection="",
                    service_bus_namespace="", vault_connection="", vault_table_endpoint="", vault_table="vault",
                    max_body_bytes=1, import_wait_seconds=0, **auth)


def test_without_an_issuer_every_token_is_refused_and_a_tenant_means_entra_id_only(tmp_path):
    from devhost.devissuer import DevIssuer

    nothing = build_authenticator(settings(), FakeVendors())
    assert isinstance(nothing.tokens, NotConfigured)
    with pytest.raises(AuthenticationFailed, match="not configured"):
        nothing.authenticate({"Authorization": "Bearer a.b.c"})
    for issuer_setting in ("", DEV_ISSUER):  # the development issuer is ignored once a tenant is set
        entra = build_authenticator(settings(auth_tenant_id=TENANT, auth_issuer=issuer_setting,
                                             auth_audiences=("api://markr",)), FakeVendors())
        assert entra.tokens.issuer == f"https://login.microsoftonline.com/{TENANT}/v2.0"
        assert entra.tokens.keys.url == f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"
    dev = DevIssuer.ensure(tmp_path)
    entra.tokens.keys = JwksCache(dev.jwks_file_url)  # even with the development key in its JWKS
    with pytest.raises(AuthenticationFailed, match="another issuer"):
        entra.authenticate({"Authorization": f"Bearer {dev.mint(['Results.Read'], audience='api://markr')}"})


# ---- the route decorator

class FakeAuthenticator:
    def __init__(self, outcome) -> None:
        self.outcome = outcome

    def authenticate(self, headers):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


@pytest.fixture
def install():
    def _install(outcome):
        bootstrap.use(bootstrap.Services(settings(), authenticator=FakeAuthenticator(outcome)))

    yield _install
    bootstrap.use(None)


def call(handler, headers=None):
    calls = []

    @requires(Role.READ, Role.ADMIN)
    def route(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
        calls.append(caller)
        return func.HttpResponse("ok")

    response = (handler or route)(func.HttpRequest("GET", "http://h/api/x", headers=headers or {}, body=b""))
    return response, calls


def body(response):
    return json.loads(response.get_body())


def test_no_credentials_is_401_with_a_bare_bearer_challenge(install):
    install(None)
    response, calls = call(None)
    assert response.status_code == 401 and calls == []
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="markr"'
    assert body(response)["error"]["code"] == "unauthorized"


def test_bad_credentials_are_401_invalid_token_with_the_reason(install):
    install(AuthenticationFailed("the token has expired"))
    response, calls = call(None)
    assert response.status_code == 401 and calls == []
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="markr", error="invalid_token", error_description="the token has expired"')
    assert body(response)["error"] == {"code": "invalid-token", "message": "the token has expired"}


def test_a_description_echoing_the_callers_header_cannot_break_the_challenge(install, issuer):
    evil = _b64(json.dumps({"alg": 'x"\r\nSet-Cookie: a=\u2603', "kid": "k1"}).encode()) + ".e30.sig"
    install(AuthenticationFailed(refused(validator(issuer).validate, evil)))
    challenge = call(None)[0].headers["WWW-Authenticate"]
    assert challenge.isascii() and "\r" not in challenge and "\n" not in challenge
    assert challenge.count('"') == 6  # realm, error, error_description: nothing else quoted


def test_a_caller_without_the_role_is_403_naming_it(install):
    install(Principal("s", frozenset({"Results.Submit"}), vendor="acme"))
    response, calls = call(None)
    assert response.status_code == 403 and calls == []
    error = body(response)["error"]
    assert error["code"] == "forbidden" and "Results.Read or Ops.Admin" in error["message"]
    assert error["requiredRoles"] == ["Results.Read", "Ops.Admin"]


def test_a_caller_with_any_of_the_roles_reaches_the_handler(install):
    operator = Principal("s", frozenset({"Ops.Admin"}))
    install(operator)
    response, calls = call(None)
    assert response.status_code == 200 and calls == [operator]


def test_issuer_keys_unavailable_is_a_503(install):
    install(AuthUnavailable("down"))
    response, _ = call(None)
    assert response.status_code == 503 and body(response)["error"]["code"] == "auth-unavailable"
    assert response.headers["Retry-After"]


def test_an_anonymous_route_gets_anonymous_callers_but_still_refuses_bad_credentials(install):
    seen = []

    @requires(Role.ADMIN, anonymous=True)
    def route(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
        seen.append(caller)
        return func.HttpResponse("ok")

    install(None)
    assert call(route)[0].status_code == 200 and seen == [ANONYMOUS]
    install(AuthenticationFailed("bad"))
    assert call(route)[0].status_code == 401


def test_a_refused_import_vaults_nothing(install):  # the fixture uninstalls the services afterwards
    from functions.receiver import receiver
    from tests.fakes import FakeBus, FakeStore, FakeVault

    vault, bus = FakeVault(), FakeBus()
    for outcome in (None, AuthenticationFailed("bad"), Principal("s", frozenset({"Results.Read"})),
                    Principal("app", frozenset({"Results.Submit"}))):  # Submit, but no registered vendor
        bootstrap.use(bootstrap.Services(settings(),
                                         authenticator=FakeAuthenticator(outcome), vault=vault, bus=bus,
                                         store=FakeStore()))
        response = receiver(func.HttpRequest("POST", "http://h/api/import", body=b"<mcq-test-results/>",
                                             headers={"Content-Type": "text/xml+markr"}))
        assert response.status_code in (401, 403)
    assert vault.records == {} and bus.sent == []


# ---- the development issuer (devhost/devissuer.py)

def test_development_tokens_pass_the_same_checks_through_the_key_file(tmp_path, monkeypatch):
    from devhost.devissuer import DevIssuer, local_auth_env

    for name, value in local_auth_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    from shared.config import settings as read_settings

    read_settings.cache_clear()
    try:
        authenticator = build_authenticator(read_settings(), FakeVendors())
    finally:
        read_settings.cache_clear()
    dev = DevIssuer.ensure(tmp_path)
    assert DevIssuer.ensure(tmp_path).kid == dev.kid  # the key is made once
    principal = authenticator.authenticate({"Authorization": f"Bearer {dev.mint(['Results.Submit'], vendor='acme')}"})
    assert (principal.vendor, principal.roles) == ("acme", {"Results.Submit"})
    other = DevIssuer.ensure(tmp_path / "other")
    with pytest.raises(AuthenticationFailed, match="not one of the issuer's keys"):
        authenticator.authenticate({"Authorization": f"Bearer {other.mint(['Results.Read'])}"})


def test_the_local_host_fills_in_the_development_issuer_only_without_a_tenant(tmp_path, monkeypatch):
    from devhost import devissuer

    monkeypatch.setenv(devissuer.DIR_SETTING, str(tmp_path))
    for name in ("MARKR_AUTH_ISSUER", "MARKR_AUTH_AUDIENCE", "MARKR_AUTH_JWKS_URL"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("MARKR_AUTH_TENANT_ID", TENANT)
    assert devissuer.prepare(7071) is None
    assert os.environ["MARKR_AUTH_ISSUER"] == "" and os.environ["MARKR_AUTH_JWKS_URL"] == ""
    assert devissuer.well_known("/.well-known/jwks.json") is None
    monkeypatch.setenv("MARKR_AUTH_TENANT_ID", "")
    issuer = devissuer.prepare(7071)
    assert os.environ["MARKR_AUTH_ISSUER"] == DEV_ISSUER
    assert os.environ["MARKR_AUTH_AUDIENCE"] == devissuer.DEV_AUDIENCE
    assert os.environ["MARKR_AUTH_JWKS_URL"] == "http://127.0.0.1:7071/.well-known/jwks.json"
    assert json.loads(devissuer.well_known("/.well-known/jwks.json")) == issuer.jwks()
    assert any(line.startswith("Dashboard (Results.Read for 12 h): http://127.0.0.1:7071/#token=ey")
               for line in devissuer.banner("http://127.0.0.1:7071/api"))

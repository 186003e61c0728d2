"""Roles, the authenticated caller, and the two refusals (401 and 403) as outcomes for the edge."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """App roles, as the API's app registration declares them (the token's `roles` claim)."""

    SUBMIT = "Results.Submit"  # vendor systems: POST /api/import, their own submissions' statuses
    READ = "Results.Read"  # analysts: results and every submission's status
    ADMIN = "Ops.Admin"  # operators: ops routes, health detail


# A vendor name is a vault partition (Table Storage PartitionKey) and a lineage value.
VENDOR_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def invalid_vendor_name(name: str) -> str | None:
    if VENDOR_NAME.fullmatch(name):
        return None
    return "must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"


@dataclass(frozen=True)
class Principal:
    subject: str  # token `sub` / `oid`, or vendor:<name>/key:<id> for an API key
    roles: frozenset[str] = field(default_factory=frozenset)
    vendor: str | None = None  # the submitting vendor (the submission's `source`)
    method: str = "token"  # "token", "api-key" or "anonymous"
    client_id: str | None = None  # the calling application (`azp`/`appid`)

    def has(self, role: Role | str) -> bool:
        return str(role) in self.roles

    @property
    def reads_everything(self) -> bool:
        """Analysts and operators read every submission; a vendor only its own."""
        return self.has(Role.READ) or self.has(Role.ADMIN)


ANONYMOUS = Principal("anonymous", method="anonymous")


class AuthenticationFailed(Exception):
    """Credentials were presented and are not good: 401 with error="invalid_token". The description is
    safe to show the caller and to log (it never holds the secret)."""

    def __init__(self, description: str, detail: str = "") -> None:
        super().__init__(description)
        self.description = description
        self.detail = detail  # for the log only (key id, kid, issuer), never a secret


class AuthUnavailable(Exception):
    """The credentials cannot be checked right now (the issuer's keys cannot be fetched): 503."""


@dataclass(frozen=True)
class Unauthorized:
    """401: no credentials (`presented` False) or bad ones."""

    description: str
    presented: bool = True


@dataclass(frozen=True)
class Forbidden:
    """403: a valid caller without the role the route needs (or not a registered vendor)."""

    message: str
    roles: tuple[str, ...] = ()

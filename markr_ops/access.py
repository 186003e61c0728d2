"""`markr-ops token` (development tokens) and `markr-ops vendors` (vendors and their API keys)."""
from __future__ import annotations

import re
from datetime import timedelta

import click
from rich.console import Console
from rich.table import Table

from markr_ops import environment, render
from shared.auth import Role

console = Console()
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _short(when) -> str:
    return when.strftime("%Y-%m-%d %H:%M") if when else "-"


def parse_duration(text: str) -> timedelta:
    """`90`, `90s`, `30m`, `12h`, `7d`."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration such as 30m, 12h or 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _vendors():
    from shared.bootstrap import services

    environment.check_database()
    return services().vendors


@click.command()
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice([r.value for r in Role]),
              help="A role the token carries (repeat for several).")
@click.option("--vendor", help="The submitting vendor (its submissions' source); for Results.Submit.")
@click.option("--expires", default="1h", show_default=True, help="Lifetime: 90s, 30m, 12h, 7d.")
@click.option("--subject", help="The token's subject (default: the development app).")
def token(roles: tuple[str, ...], vendor: str | None, expires: str, subject: str | None) -> None:
    """Print an access token from the local development issuer (never accepted in Azure)."""
    from devhost.devissuer import DEV_ISSUER, DevIssuer
    from shared.auth.model import invalid_vendor_name
    from shared.config import settings

    s = settings()
    if s.auth_tenant_id or (s.auth_issuer and s.auth_issuer != DEV_ISSUER):
        raise click.ClickException("the app trusts another issuer (MARKR_AUTH_TENANT_ID / MARKR_AUTH_ISSUER): "
                                   "get a token from Entra ID instead (see docs/deploy.md)")
    if vendor and invalid_vendor_name(vendor):
        raise click.BadParameter(f"{vendor!r} {invalid_vendor_name(vendor)}", param_hint="--vendor")
    if Role.SUBMIT in roles and not vendor:
        raise click.UsageError("a Results.Submit token names its vendor: add --vendor NAME")
    lifetime = parse_duration(expires).total_seconds()
    if lifetime <= 0:
        raise click.BadParameter("must be positive", param_hint="--expires")
    audience = s.auth_audiences[0] if s.auth_audiences else None
    click.echo(DevIssuer.ensure().mint(roles, vendor=vendor, expires_in=lifetime, subject=subject,
                                       **({"audience": audience} if audience else {})))


@click.group()
def vendors() -> None:
    """Vendors (the source of their submissions) and their API keys."""


def _show_key(vendor: str, key_id: str, key: str, as_json: bool, note: str = "") -> None:
    if as_json:
        click.echo(render.as_json({"vendor": vendor, "keyId": key_id, "apiKey": key}))
        return
    console.print(f"vendor {vendor}: new API key {key_id}{note}")
    console.print("Send it as the X-Markr-Api-Key header. It is shown once and cannot be read again:")
    click.echo(key)


@vendors.command("add")
@click.argument("name")
@click.option("--app-id", help="The vendor's Entra ID application (client) id: its tokens' azp/appid.")
@click.option("--no-key", is_flag=True, help="Issue no API key (a vendor that uses Entra ID tokens).")
@click.option("--json", "as_json", is_flag=True)
def add(name: str, app_id: str | None, no_key: bool, as_json: bool) -> None:
    """Register vendor NAME (if new) and issue it an API key; its other keys stay active."""
    from shared.db.vendors import VendorError

    store = _vendors()
    try:
        created = store.add(name, app_id)
        issued = None if no_key else store.issue_key(name)
    except VendorError as exc:
        raise click.ClickException(str(exc)) from None
    if issued:
        _show_key(name, *issued, as_json, "" if created else " (its other keys stay active)")
    elif as_json:
        click.echo(render.as_json({"vendor": name, "created": created, "appId": app_id}))
    else:
        console.print(f"vendor {name} {'registered' if created else 'updated'}")


@vendors.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_vendors(as_json: bool) -> None:
    """Vendors, their application ids and keys (never the keys themselves)."""
    found = _vendors().list()
    if as_json:
        click.echo(render.as_json({"vendors": [v.as_json() for v in found]}))
        return
    table = Table(title="Markr vendors")
    for column in ("vendor", "app id", "key", "state", "created", "expires", "last used"):
        table.add_column(column)
    for v in found:
        for k in v.keys or [None]:
            state = "" if k is None else "active" if k.active else "revoked" if k.revoked_at else "expired"
            table.add_row(v.name, v.app_id or "-", k.key_id if k else "-", state, _short(k and k.created_at),
                          _short(k and k.expires_at), _short(k and k.last_used_at))
    console.print(table)


@vendors.command("rotate")
@click.argument("name")
@click.option("--grace", default="0s", show_default=True,
              help="How long the vendor's other keys keep working (e.g. 7d while machines are updated).")
@click.option("--json", "as_json", is_flag=True)
def rotate(name: str, grace: str, as_json: bool) -> None:
    """Issue NAME a new API key; its other keys expire after --grace."""
    from shared.db.vendors import VendorError

    try:
        key_id, key, expiring = _vendors().rotate(name, parse_duration(grace))
    except VendorError as exc:
        raise click.ClickException(str(exc)) from None
    _show_key(name, key_id, key, as_json,
              f"; {', '.join(expiring) or 'no other keys'} expire{'s' if len(expiring) == 1 else ''} in {grace}")


@vendors.command("revoke")
@click.argument("name")
@click.argument("key_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every active key of NAME.")
@click.option("--json", "as_json", is_flag=True)
def revoke(name: str, key_ids: tuple[str, ...], all_: bool, as_json: bool) -> None:
    """Revoke API keys of NAME at once."""
    from shared.db.vendors import VendorError

    if bool(key_ids) == all_:
        raise click.UsageError("name KEY_ID(s) or pass --all (not both)")
    try:
        revoked = _vendors().revoke(name, None if all_ else list(key_ids))
    except VendorError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(render.as_json({"vendor": name, "revoked": revoked}))
    else:
        console.print(f"vendor {name}: revoked {', '.join(revoked) or 'nothing (already revoked)'}")

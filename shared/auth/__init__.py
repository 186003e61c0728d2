"""Who is calling: Entra ID (or development) access tokens and vendor API keys, checked at the HTTP edge.

`Authenticator` (port.py) turns a request's headers into a `Principal` (roles, vendor) or refuses
them; functions/auth.py declares, per route, which roles may call it.
"""
from shared.auth.model import (
    ANONYMOUS,
    AuthenticationFailed,
    AuthUnavailable,
    Forbidden,
    Principal,
    Role,
    Unauthorized,
)
from shared.auth.port import Authenticator, StoredKey, VendorDirectory

__all__ = ["ANONYMOUS", "AuthUnavailable", "AuthenticationFailed", "Authenticator", "Forbidden", "Principal",
           "Role", "StoredKey", "Unauthorized", "VendorDirectory"]

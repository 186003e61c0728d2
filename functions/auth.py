"""Who may call each route: one line per HTTP function, checked before the handler reads the body.

    @bp.function_name("results_aggregate")
    @bp.route(route="results/{testId}/aggregate", methods=["GET"])
    @requires(Role.READ)                      # innermost: right above the def
    def results_aggregate(req: func.HttpRequest, caller: Principal) -> func.HttpResponse: ...

`requires(*roles)` lets a caller holding any one of the roles through; `anonymous=True` also lets a
caller without credentials through (as ANONYMOUS; bad credentials are still a 401) and leaves it to
the handler to look at `caller`'s roles. The app's http_auth_level is ANONYMOUS: the Functions host
checks no keys (and none locally), so this is the check, the same in Azure and on the local host.
"""
import logging
from collections.abc import Callable, Mapping

import azure.functions as func

from functions.http import database_errors, respond
from shared.auth import (
    ANONYMOUS,
    AuthenticationFailed,
    AuthUnavailable,
    Forbidden,
    Principal,
    Role,
    Unauthorized,
)
from shared.bootstrap import services
from shared.pipeline.outcomes import Problem

log = logging.getLogger(__name__)
Handler = Callable[[func.HttpRequest, Principal], func.HttpResponse]


def authorize(headers: Mapping[str, str], roles: tuple[Role, ...], anonymous: bool = False,
              what: str = "") -> Principal | Unauthorized | Forbidden | Problem:
    """The caller, or why it is refused. Failed attempts are logged with the reason, never the secret."""
    try:
        principal = services().authenticator.authenticate(headers)
    except AuthenticationFailed as exc:
        log.warning("authentication failed on %s: %s%s (from %r)", what, exc.description,
                    f" [{exc.detail}]" if exc.detail else "", headers.get("X-Forwarded-For", "direct")[:100])
        return Unauthorized(exc.description)
    except AuthUnavailable as exc:
        log.warning("authentication unavailable on %s: %s", what, exc)
        return Problem("auth-unavailable", "credentials cannot be checked right now; retry later")
    except database_errors() as exc:
        log.warning("authentication needs the database, which is unavailable: %s", exc)
        return Problem("database-unavailable", "the database cannot be reached; retry later")
    if principal is None:
        return ANONYMOUS if anonymous else Unauthorized("this route needs credentials", presented=False)
    if anonymous or any(principal.has(role) for role in roles):
        return principal
    needed = " or ".join(roles)
    log.warning("forbidden on %s: %s lacks %s", what, principal.subject, needed)
    return Forbidden(f"this route needs the role {needed}", tuple(roles))


def requires(*roles: Role, anonymous: bool = False) -> Callable[[Handler], Callable[..., func.HttpResponse]]:
    if not roles:
        raise ValueError("name at least one role")

    def decorate(handler: Handler) -> Callable[..., func.HttpResponse]:
        # The registered function takes only `req` (the worker binds parameters by name), so no
        # functools.wraps: its __wrapped__ would expose `caller` as a binding.
        def function(req: func.HttpRequest) -> func.HttpResponse:
            caller = authorize(req.headers, roles, anonymous, handler.__name__)
            if not isinstance(caller, Principal):
                return respond(caller)
            return handler(req, caller)

        for name in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(function, name, getattr(handler, name))
        function.required_roles = tuple(roles)  # read by tests: every route declares its roles
        function.allows_anonymous = anonymous
        return function

    return decorate

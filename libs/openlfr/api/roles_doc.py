"""Each protected operation's OpenAPI description names the roles its route enforces.

The roles are read from the route's own dependencies (``Access.require`` marks the dependency it
returns with ``required_roles``), never written by hand, so the document cannot drift from what
the service checks. Each such operation also gets ``x-required-roles`` (sorted) for generated
clients.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from openlfr.api.auth import ROLES

#: The extension key listing an operation's roles.
EXTENSION = "x-required-roles"


def route_required_roles(route: APIRoute) -> frozenset[str] | None:
    """The roles a caller of ``route`` needs one of (None when no role dependency guards it).

    Raises:
        ValueError: two role dependencies on one route ask for different roles (the caller would
            need one of each, which a single "one of" line cannot say).
    """
    found: set[frozenset[str]] = set()

    def walk(dependant: Dependant) -> None:
        roles = getattr(dependant.call, "required_roles", None)
        if roles is not None:
            found.add(frozenset(roles))
        for sub in dependant.dependencies:
            walk(sub)

    walk(route.dependant)
    if len(found) > 1:
        raise ValueError(f"{route.path}: several role dependencies {sorted(sorted(r) for r in found)}")
    return next(iter(found)) if found else None


def roles_sentence(roles: frozenset[str]) -> str:
    """The line the description gets, e.g. ``Required role: `reviewer`.``."""
    if frozenset(roles) == frozenset(ROLES):
        names = ", ".join(f"`{r}`" for r in ROLES)
        return f"Required role: any one ({names})."
    ordered = [r for r in ROLES if r in roles]
    if len(ordered) == 1:
        return f"Required role: `{ordered[0]}`."
    return "Required role: one of " + ", ".join(f"`{r}`" for r in ordered) + "."


def document_required_roles(router: APIRouter) -> None:
    """Append the required roles to the description of every role-guarded route of ``router``.

    Call before the router is included in an app (an app's OpenAPI document is built from the
    routes as they are then, and cached).
    """
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        roles = route_required_roles(route)
        if roles is None:
            continue
        line = roles_sentence(roles)
        description = (route.description or "").rstrip()
        if line in description:
            continue
        route.description = f"{description}\n\n{line}" if description else line
        route.openapi_extra = {**(route.openapi_extra or {}), EXTENSION: sorted(roles)}

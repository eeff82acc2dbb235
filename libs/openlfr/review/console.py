"""The operator console: one self-contained HTML page (inline CSS and JavaScript, nothing fetched
from elsewhere) served at ``/console``, assembled from the package's ``console_assets/``
(``console.html``: the body and card template; ``console.css``; ``console.js``).

The page asks for an API token (kept in ``sessionStorage``, sent as ``Authorization: Bearer``,
never put in a URL), asks ``/v1/me`` who holds it (shown in the header with the roles), loads
``/v1/alerts`` and ``/v1/alerts/summary`` (counts per status and "needs my review", the cameras
and deployments to filter by), then follows ``/v1/alerts/stream`` with ``fetch()`` streaming
(``EventSource`` cannot send the header). The face crops are fetched with the token too and shown
from ``blob:`` URLs, and so is the scene crop around the probe face where the alert has one; a
click on any of them shows the faces and the scene large. Each alert's subject category, legal
basis and expiry are read from ``/v1/alerts/{id}/subject`` (once per subject per load). Times are
shown in the browser's time zone with its UTC offset and relative to now ("3 min ago"), the UTC
time in the tooltip. Everything from the API is written with ``textContent``, never as HTML. A
Content-Security-Policy allows only this page's own script and style (by hash), images from
``blob:`` and requests to the same origin.

Only the actions the holder may take now are offered (the API refuses the others anyway): none
to a token without the ``reviewer`` role, none on a final alert, none on an alert awaiting its
second review to the reviewer who made the first, no Confirm once the crops were deleted; the
card says why in ``[data-role=why-not]``. An optional sound and browser notification announce
each new alert that arrives on the stream (``#notify``, kept in ``localStorage``); the
notification names the camera only, not the subject.

Stable hooks for tests and tooling: ``#token``, ``#token-save``, ``#token-clear``, ``#whoami``
(``[data-name]``, ``[data-roles]``), ``#filter-status`` (``mine`` for "needs my review", ``""``
for all, or a status), ``#filter-camera``, ``#filter-deployment``, ``#counts`` holding
``button[data-count-for=mine|pending|awaiting_second|confirmed|rejected]`` with the number in
``[data-count]``, ``#notify[data-notified]`` (new alerts announced), ``#conn-status[data-state]``
(``idle``, ``connecting``, ``live``, ``reconnecting``, ``error``), ``#error``,
``#alerts[data-loaded]``, ``#more``, ``#enlarge`` (a ``dialog`` with ``#enlarge-probe``,
``#enlarge-reference``, ``#enlarge-scene``, ``#enlarge-close``); each alert is
``li.alert[data-alert-id][data-status]`` holding ``[data-role=probe|reference|scene|scene-figure|
status|subject|category|legal-basis|expiry|camera|deployment|time|time-relative|score|reviews|
why-not|note|reject-form|reject-reason|error|...]``
and ``button[data-action=enlarge|confirm|reject|reject-submit|reject-cancel]``; each review step
is ``li[data-step][data-decision][data-reviewer]``.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources


def _asset(name: str) -> str:
    """One file of ``console_assets/`` (package data), as text."""
    return resources.files("openlfr.review").joinpath("console_assets", name).read_text(encoding="utf-8")


STYLE = _asset("console.css")
SCRIPT = _asset("console.js")
BODY = _asset("console.html")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


PAGE = (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    '<meta name="referrer" content="no-referrer">\n'
    "<title>OpenLFR alert review</title>\n"
    f"<style>{STYLE}</style>\n</head>\n<body>{BODY}<script>{SCRIPT}</script>\n</body>\n</html>\n"
)

#: The page may run only its own script and style, show images only from blob: URLs, and talk
#: only to its own origin.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        f"script-src {_csp_hash(SCRIPT)}",
        f"style-src {_csp_hash(STYLE)}",
        "img-src blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

#: Headers the console page is served with.
CONSOLE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}

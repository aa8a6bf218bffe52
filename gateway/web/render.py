"""Pages from templates, with every value passing the one display layer before Jinja2 escapes it.

Why `finalize`: a template author cannot forget to escape or defang. Every `{{ value }}` of type str is
shown through `parsers.display.for_display` (defanged, controls and bidi made visible, IDN beside its
punycode) and then HTML-escaped by autoescape. Two wrappers say otherwise, and only these:
- `Block`: multi-line text (a message body): the same layer, line feeds kept, for a `<pre>`.
- `Live`: an indicator's live value for the read-only copy field: controls made visible, not defanged.
Nothing derived from a message is ever `Markup` or `|safe`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from parsers.display import for_display, terminal_safe

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")


class Block(str):
    """Multi-line sender text for a <pre>: line feeds kept, everything else as in a single-line field."""


class Live(str):
    """A live value for a read-only copy field: never a link, never defanged, controls still visible."""


class Ours(str):
    """A string the desk itself made (URLs of our routes, codes we wrote): shown as is, still escaped."""


def _shown(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Markup | Ours):
        return value
    if isinstance(value, Block):
        return for_display(str(value), multiline=True)
    if isinstance(value, Live):
        return terminal_safe(str(value))
    if isinstance(value, str):
        return for_display(value)
    return value


def when(value: Any) -> str:
    """An instant the store wrote, as a desk reads it: to the second, in UTC, saying so."""
    from datetime import UTC, datetime

    if not value:
        return "-"
    try:
        instant = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every template, whatever its name
        finalize=_shown,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["block"] = Block
    env.filters["live"] = Live
    env.filters["ours"] = Ours
    env.filters["when"] = when
    return env


_ENV = environment()


def page(request: Request | None, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    user = getattr(request.state, "user", None) if request is not None else None
    html = _ENV.get_template(template).render(user=user, **context)
    return HTMLResponse(html, status_code=status)


def plain(status: int, title: str, text: str) -> HTMLResponse:
    """A page that depends on nothing but its arguments (404, 403): the same bytes for everyone."""
    return HTMLResponse(_ENV.get_template("plain.html").render(title=title, text=text), status_code=status)


def not_found() -> HTMLResponse:
    """The one 404: an unknown case, a case this role may not see, a message that is not there."""
    return plain(404, "Not found", "There is nothing at this address.")


def forbidden(
    text: str = "The form was stale or not ours; go back, reload it and try again.",
) -> HTMLResponse:
    return plain(403, "Refused", text)

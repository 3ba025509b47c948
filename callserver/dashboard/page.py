"""What every dashboard page shares: who is signed in, the form's CSRF check, rendering, going back.

Only owners get in (operators get 403); an owner linked to sites sees only those sites. Refusals are
raised as errors and answered by the one mapping in `web/errors.py` (the dashboard's error page); a
form that cannot be saved goes back to its page with the reason (`back`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.accounts import Account
from callserver.dashboard import queries
from callserver.store.models import Site
from callserver.web import auth, csrf
from callserver.web.errors import HttpError
from callserver.web.keys import DATABASE, TEMPLATES


@dataclass(frozen=True)
class Owner:
    """The logged-in owner of this request and the sites they may see."""

    account: Account
    site_ids: list[int]
    csrf: str

    @property
    def sees_every_site(self) -> bool:
        return not self.account.site_ids


def forbidden(message: str) -> HttpError:
    return HttpError(403, "forbidden", message)


async def signed_in_owner(request: web.Request) -> Owner:
    """The owner of this request; strangers are sent to sign in, operators refused."""
    account = await auth.current_account(request)
    if account is None:
        raise web.HTTPFound(f"/dashboard/login?{urlencode({'next': request.path_qs})}")
    if account.role != "owner":
        raise forbidden("The dashboard is for shop owners; operators use the softphone.")
    async with request.app[DATABASE].session() as session:
        site_ids = await queries.visible_site_ids(session, account.site_ids)
    return Owner(account, site_ids, csrf.token_for(request.cookies.get(auth.COOKIE, "")))


async def checked_form(request: web.Request) -> tuple[Owner, dict[str, str]]:
    """The owner and the posted form's fields, after checking its CSRF token (403 when it is wrong).

    A field given more than once keeps its last value; `checked_form_all` has them all."""
    owner, form = await _posted(request)
    return owner, {key: str(value) for key, value in form.items()}


async def checked_form_all(request: web.Request, key: str) -> tuple[Owner, dict[str, str], list[str]]:
    """Like `checked_form`, with every value of the field `key` as well."""
    owner, form = await _posted(request)
    return owner, {k: str(v) for k, v in form.items()}, [str(v) for v in form.getall(key, [])]


async def _posted(
    request: web.Request,
) -> tuple[Owner, MultiDictProxy[str | bytes | bytearray | web.FileField]]:
    owner = await signed_in_owner(request)
    form = await request.post()
    if not csrf.is_valid(request.cookies.get(auth.COOKIE), str(form.get(csrf.FIELD, ""))):
        raise forbidden("This form has expired or did not come from the dashboard. Reload the page.")
    return owner, form


def render(request: web.Request, owner: Owner, template: str, **context: object) -> web.Response:
    html = (
        request.app[TEMPLATES]
        .get_template(f"dashboard/{template}")
        .render(
            account=owner.account,
            csrf_token=owner.csrf,
            path=request.path,
            notice=request.query.get("notice"),
            error=request.query.get("error"),
            fmt=FORMATS,
            **context,
        )
    )
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


def back(location: str, notice: str | None = None, error: str | None = None) -> web.HTTPSeeOther:
    """Back to the form's page, with what was done or why it could not be."""
    params = {k: v for k, v in (("notice", notice), ("error", error)) if v}
    return web.HTTPSeeOther(location + ("?" + urlencode(params) if params else ""))


async def site_names(session: AsyncSession, site_ids: Sequence[int]) -> dict[int, str]:
    rows = await session.execute(select(Site.id, Site.name).where(queries.in_sites(Site.id, site_ids)))
    return {r.id: r.name for r in rows}


# ------------------------------------------------------------------------------------ formatting


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _money(amounts: Sequence[tuple[str, Decimal]]) -> str:
    if not amounts:
        return "—"
    return " + ".join(f"{amount:,.2f} {currency}" for currency, amount in amounts)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _http_url(value: object) -> str | None:
    # Autoescaping does not stop a `javascript:` link: only http(s) addresses become links.
    text = str(value or "")
    return text if text.startswith(("http://", "https://")) else None


FORMATS: Mapping[str, object] = {
    "duration": _duration,
    "money": _money,
    "when": _when,
    "percent": _percent,
    "url": _http_url,
}

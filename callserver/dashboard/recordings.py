"""Recordings on disk: where a call's file is, how long it is kept, and erasing a visitor's data."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, delete, false, func, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute

from callserver.dashboard.queries import in_sites
from callserver.errors import InvalidInput
from callserver.store.database import Database
from callserver.store.models import AuditEntry, Call, Chat, ChatMessage, LeftMessage, Order, Site, Visitor

log = logging.getLogger(__name__)

CONTENT_TYPES = {".ogg": "audio/ogg", ".opus": "audio/ogg", ".oga": "audio/ogg", ".webm": "audio/webm"}
ERASED = "visitor.erased"


def recording_file(recording_path: str, var_dir: Path) -> Path:
    """The file of a call's recording: paths in the store are absolute or relative to `var_dir`."""
    path = Path(recording_path)
    return path if path.is_absolute() else var_dir / path


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def _remove(paths: Sequence[Path]) -> int:
    removed = 0
    for path in paths:
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            removed += 1  # already gone: the goal is reached
        except OSError as e:
            log.warning("cannot remove recording %s: %s", path, e)
    return removed


async def expire_recordings(database: Database, var_dir: Path, now: datetime, batch: int = 500) -> int:
    """Delete the recordings of calls older than their site's retention days; returns how many."""
    expired = 0
    async with database.session() as session:
        sites = list(
            await session.execute(
                select(Site.id, Site.retention_days).where(Site.retention_days.is_not(None))
            )
        )
    for site_id, days in sites:
        cutoff = now - timedelta(days=days or 0)
        while True:
            # The rows are cleared first, the files removed after the commit: a crash in between
            # leaves an orphan file rather than a call that points to nothing.
            async with database.session() as session:
                rows = list(
                    await session.execute(
                        select(Call.id, Call.recording_path)
                        .where(
                            Call.site_id == site_id,
                            Call.created_at < cutoff,
                            Call.recording_path.is_not(None),
                        )
                        .limit(batch)
                    )
                )
                if not rows:
                    break
                await session.execute(
                    update(Call).where(Call.id.in_([r.id for r in rows])).values(recording_path=None)
                )
            expired += len(rows)
            await asyncio.to_thread(_remove, [recording_file(r.recording_path, var_dir) for r in rows])
    return expired


async def keep_expiring(
    database: Database,
    var_dir: Path,
    interval: float = 3600.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Run `expire_recordings` now and then every `interval` seconds, until cancelled."""
    while True:
        try:
            count = await expire_recordings(database, var_dir, clock())
            if count:
                log.info("deleted %d recording(s) past their site's retention", count)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("recording retention failed; trying again later")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class Erasure:
    """What erasing a visitor removed."""

    visitors: int
    recordings: int
    chat_messages: int
    left_messages: int
    orders: int  # orders whose contact data was cleared (the orders themselves stay)

    @property
    def items(self) -> int:
        return self.visitors + self.recordings + self.chat_messages + self.left_messages + self.orders


async def erase_visitor(
    database: Database,
    site_ids: Sequence[int],
    var_dir: Path,
    actor_id: int | None,
    email: str | None = None,
    phone: str | None = None,
    now: datetime | None = None,
) -> Erasure:
    """Erase a person found by e-mail or phone on these sites: recordings, chat messages, left
    messages and contact data; writes an audit entry per site (who, when, how many)."""
    email = (email or "").strip().lower() or None
    phone = (phone or "").strip() or None
    if not email and not phone:
        raise InvalidInput("Give the e-mail address or the phone number of the person to erase.")
    at = now or datetime.now(UTC)

    def matches(
        email_column: InstrumentedAttribute[str | None], phone_column: InstrumentedAttribute[str | None]
    ) -> ColumnElement[bool]:
        terms: list[ColumnElement[bool]] = []
        if email:
            terms.append(func.lower(email_column) == email)
        if phone:
            terms.append(phone_column == phone)
        return or_(*terms)

    files: list[Path] = []
    per_site: dict[int, dict[str, int]] = {}

    def count(site_id: int, what: str, n: int = 1) -> None:
        per_site.setdefault(
            site_id, {"visitors": 0, "recordings": 0, "chat_messages": 0, "left_messages": 0, "orders": 0}
        )[what] += n

    async with database.session() as session:
        visitors = list(
            await session.scalars(
                select(Visitor).where(
                    in_sites(Visitor.site_id, site_ids), matches(Visitor.email, Visitor.phone)
                )
            )
        )
        visitor_ids = [v.id for v in visitors]
        for visitor in visitors:
            visitor.name = visitor.email = visitor.phone = None
            count(visitor.site_id, "visitors")
        if visitor_ids:
            calls = list(
                await session.execute(
                    select(Call.id, Call.site_id, Call.recording_path).where(
                        Call.visitor_id.in_(visitor_ids), Call.recording_path.is_not(None)
                    )
                )
            )
            for call in calls:
                files.append(recording_file(call.recording_path, var_dir))
                count(call.site_id, "recordings")
            if calls:
                await session.execute(
                    update(Call).where(Call.id.in_([c.id for c in calls])).values(recording_path=None)
                )
            chats = list(
                await session.execute(select(Chat.id, Chat.site_id).where(Chat.visitor_id.in_(visitor_ids)))
            )
            for chat in chats:
                n = (
                    await session.execute(delete(ChatMessage).where(ChatMessage.chat_id == chat.id))
                ).rowcount  # type: ignore[attr-defined]
                if n:
                    count(chat.site_id, "chat_messages", n)
        message_filter = in_sites(LeftMessage.site_id, site_ids) & or_(
            matches(LeftMessage.email, LeftMessage.phone),
            LeftMessage.visitor_id.in_(visitor_ids) if visitor_ids else false(),
        )
        for site_id, n in await session.execute(
            select(LeftMessage.site_id, func.count()).where(message_filter).group_by(LeftMessage.site_id)
        ):
            count(site_id, "left_messages", n)
        await session.execute(delete(LeftMessage).where(message_filter))
        orders = list(
            await session.scalars(
                select(Order).where(in_sites(Order.site_id, site_ids), matches(Order.email, Order.phone))
            )
        )
        for order in orders:
            order.email = order.phone = None
            count(order.site_id, "orders")
        for site_id, figures in per_site.items():
            session.add(
                AuditEntry(
                    at=at,
                    site_id=site_id,
                    actor_id=actor_id,
                    action=ERASED,
                    # The audit says how much went, never whose: the contact itself is what was erased.
                    detail={"matched_by": "email" if email else "phone", **figures},
                )
            )
        if not per_site:
            session.add(
                AuditEntry(
                    at=at,
                    site_id=site_ids[0] if len(site_ids) == 1 else None,
                    actor_id=actor_id,
                    action=ERASED,
                    detail={"matched_by": "email" if email else "phone", "found": 0},
                )
            )
    await asyncio.to_thread(_remove, files)
    totals = {
        k: sum(f[k] for f in per_site.values())
        for k in ("visitors", "recordings", "chat_messages", "left_messages", "orders")
    }
    return Erasure(**totals)

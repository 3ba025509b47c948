"""A site's working hours: weekly opening times in the shop's time zone, and closed dates.

Outside them the widget offers only the offline form and says when the shop opens; the server
refuses calls and chats (error code `closed`). A site without hours is always open.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from callserver.errors import CallserverError, InvalidInput

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class ShopClosed(CallserverError):
    code = "closed"


def parse_spans(text: str) -> list[tuple[time, time]]:
    """`"09:00-13:00, 14:00-18:00"` → [(09:00, 13:00), (14:00, 18:00)]; empty text: closed all day."""
    spans: list[tuple[time, time]] = []
    for part in (p for p in text.split(",") if p.strip()):
        match = SPAN.match(part)
        if not match:
            raise InvalidInput(f"Opening hours are written like 09:00-18:00, not {part.strip()!r}.")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or m1 > 59 or m2 > 59 or not (h2 < 24 or (h2 == 24 and m2 == 0)):
            raise InvalidInput(f"Not a time of day: {part.strip()!r}.")
        start = time(h1, m1)
        end = time.max if h2 == 24 else time(h2, m2)
        if end <= start:
            raise InvalidInput(f"A span must end after it starts: {part.strip()!r}.")
        spans.append((start, end))
    return sorted(spans)


class WorkingHours(BaseModel):
    """`week` maps mon…sun to spans like "09:00-18:00" (empty or missing: closed that day)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    timezone: str = "UTC"
    week: dict[str, str] = Field(default_factory=dict)
    closed_dates: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {value!r}") from e
        return value

    @field_validator("week")
    @classmethod
    def _week(cls, value: dict[str, str]) -> dict[str, str]:
        for day, spans in value.items():
            if day not in DAYS:
                raise ValueError(f"unknown day {day!r}")
            try:
                parse_spans(spans)
            except InvalidInput as e:
                raise ValueError(e.message) from e
        return value

    @classmethod
    def of_site(cls, stored: Mapping[str, object] | None) -> WorkingHours | None:
        """The site's hours, or None (always open) when it has none or they no longer parse."""
        if not stored:
            return None
        try:
            return cls.model_validate(stored)
        except ValidationError:
            return None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _spans(self, day: date) -> list[tuple[time, time]]:
        if day in self.closed_dates:
            return []
        return parse_spans(self.week.get(DAYS[day.weekday()], ""))

    def is_open(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        moment = local.time().replace(tzinfo=None)
        return any(start <= moment < end for start, end in self._spans(local.date()))

    def next_opening(self, now: datetime) -> datetime | None:
        """When the shop next opens (in its own time zone); None when it never does in the next 60 days."""
        local = now.astimezone(self.zone)
        for offset in range(61):
            day = local.date() + timedelta(days=offset)
            for start, _end in self._spans(day):
                opening = datetime.combine(day, start, tzinfo=self.zone)
                if opening > local:
                    return opening
        return None

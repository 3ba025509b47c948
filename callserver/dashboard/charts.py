"""The overview's chart as plain geometry for an inline SVG (no JavaScript needed to draw it)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from callserver.dashboard.queries import Day

WIDTH = 720
HEIGHT = 220
LEFT = 36  # room for the value axis
BOTTOM = 24  # room for the day labels
TOP = 8


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str  # calls, chats
    title: str


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class Label:
    x: float
    text: str


@dataclass(frozen=True)
class DailyChart:
    width: int
    height: int
    left: int
    bottom: float
    bars: list[Bar]
    ticks: list[Tick]
    labels: list[Label]


def _nice_ceiling(value: int) -> int:
    if value <= 4:
        return 4
    magnitude = 10 ** int(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return int(step * magnitude)
    return value


def daily_chart(days: Sequence[Day]) -> DailyChart:
    """Calls and chats per day as side-by-side bars, with a value axis and sparse day labels."""
    top = _nice_ceiling(max([1, *(max(d.calls, d.chats) for d in days)]))
    plot_width = WIDTH - LEFT
    plot_height = HEIGHT - BOTTOM - TOP
    slot = plot_width / max(1, len(days))
    bar = max(1.0, slot * 0.38)
    base = HEIGHT - BOTTOM
    bars: list[Bar] = []
    labels: list[Label] = []
    every = max(1, math.ceil(len(days) / 10))
    for i, day in enumerate(days):
        x = LEFT + i * slot + slot * 0.1
        for offset, series, value in ((0.0, "calls", day.calls), (bar, "chats", day.chats)):
            height = plot_height * value / top
            bars.append(
                Bar(
                    x=round(x + offset, 2),
                    y=round(base - height, 2),
                    width=round(bar, 2),
                    height=round(height, 2),
                    series=series,
                    title=f"{day.day.isoformat()}: {value} {series if value != 1 else series[:-1]}",
                )
            )
        if i % every == 0:
            labels.append(Label(x=round(LEFT + i * slot + slot / 2, 2), text=day.day.strftime("%d %b")))
    ticks = [Tick(y=round(base - plot_height * k / 4, 2), label=str(round(top * k / 4))) for k in range(5)]
    return DailyChart(WIDTH, HEIGHT, LEFT, base, bars, ticks, labels)

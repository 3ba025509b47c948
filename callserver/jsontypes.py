"""JSON as Python holds it: what `json.loads` gives and `json.dumps` takes (JSON columns, frames)."""

from __future__ import annotations

Json = str | int | float | bool | None | list["Json"] | dict[str, "Json"]
JsonObject = dict[str, Json]

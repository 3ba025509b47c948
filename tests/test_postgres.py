"""The same store on PostgreSQL, the database of larger installs (a real server, started here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from callserver.calls.records import CallRecords
from tests.servers import postgres
from tests.stack import running_stack, settings_for


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres() as url:
        yield url


async def test_calls_are_recorded_and_leftovers_dropped_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, database_url=postgres_url, ring_timeout=30)
    async with running_stack(settings) as stack:
        softphone = await stack.sockets.operator("op@shop.example", name="Olga", online=True)
        shopper = await stack.sockets.shopper()
        answered = await shopper.call()
        await softphone.receive("call.incoming")
        await softphone.answer(answered)
        await softphone.send({"type": "call.hangup", "call_id": answered})
        assert (await shopper.receive("call.ended"))["reason"] == "completed"
        left_open = await shopper.call()
        await softphone.receive("call.incoming")
        record = await stack.call(answered)
        assert (record.state, record.end_reason, record.operator.name) == ("ended", "completed", "Olga")
        assert record.ended_at > record.answered_at > record.created_at
        # A crash leaves the ringing call behind; the next start ends it as dropped.
        records = CallRecords(stack.database)
        assert await records.end_leftovers() == 1
        assert (await stack.call(left_open)).end_reason == "dropped"

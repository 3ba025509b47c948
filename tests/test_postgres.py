"""The same store on PostgreSQL, the database of larger installs (a real server, started here)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from callserver.calls.records import CallRecords
from callserver.store.database import Database, alembic_config
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


async def test_nodes_starting_together_migrate_a_fresh_database_once() -> None:
    # Nodes of a cluster start at the same moment on one database: without a lock, two would both create
    # alembic_version and one would die of a unique violation.
    with postgres() as url:
        nodes = [Database(url) for _ in range(3)]
        try:
            await asyncio.gather(*(node.upgrade() for node in nodes))
            async with nodes[0].session() as session:
                heads = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalars()
                assert sorted(heads) == sorted(ScriptDirectory.from_config(alembic_config()).get_heads())
        finally:
            for node in nodes:
                await node.close()

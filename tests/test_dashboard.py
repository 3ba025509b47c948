"""The owner dashboard over real HTTP: access rules, the log, a call's page, forms, retention, erasure."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path

import aiohttp
from sqlalchemy import func, select
from yarl import URL

from callserver.dashboard import daily
from callserver.dashboard.recordings import expire_recordings
from callserver.store.models import (
    AuditEntry,
    Call,
    CallEvent,
    ChatMessage,
    LeftMessage,
    Order,
    Site,
    User,
    Visitor,
)
from callserver.web import csrf
from tests.dashboard_support import (
    NOW,
    add_call,
    add_chat,
    add_left_message,
    add_order,
    add_owner,
    add_visitor,
    csrf_token,
    opus_file,
    signed_in,
)
from tests.stack import Stack

OWNER_PAGES = [
    "/dashboard/",
    "/dashboard/calls",
    "/dashboard/operators",
    "/dashboard/messages",
    "/dashboard/sites",
    "/dashboard/erase",
    "/dashboard/export/calls.csv",
    "/dashboard/export/orders.csv",
]


async def test_operators_are_refused_and_strangers_sent_to_sign_in(stack: Stack) -> None:
    await stack.add_user("op@shop.example", role="operator")
    call_id = await add_call(stack)
    message_id = await add_left_message(stack)
    async with signed_in(stack, "op@shop.example") as operator:
        for path in [*OWNER_PAGES, f"/dashboard/calls/{call_id}", f"/dashboard/calls/{call_id}/recording"]:
            async with operator.get(path, allow_redirects=False) as response:
                assert response.status == 403, path
        page = await (await operator.get("/operator/")).text()  # their own area still works
        assert page
        token = csrf.token_for(operator.cookie_jar.filter_cookies(URL(stack.url))["callserver_session"].value)
        async with operator.post(
            f"/dashboard/messages/{message_id}/status", data={"csrf": token, "status": "handled"}
        ) as response:
            assert response.status == 403
    async with stack.database.session() as session:
        assert (await session.get(LeftMessage, message_id)).status == "new"  # type: ignore[union-attr]

    async with aiohttp.ClientSession(stack.url) as stranger:
        async with stranger.get("/dashboard/calls?state=ended", allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Location"].startswith("/dashboard/login?next=")
        async with stranger.get(f"/dashboard/calls/{call_id}/recording", allow_redirects=False) as response:
            assert response.status == 403


async def test_an_owner_of_one_site_sees_nothing_of_another(stack: Stack, tmp_path: Path) -> None:
    other = await stack.add_site("Other shop", ["https://other.example"])
    await add_owner(stack, "mine@shop.example", [stack.site.id])
    recording = opus_file(tmp_path / "theirs.ogg")
    theirs = await add_call(stack, other.id, recording_path=str(recording), page="https://other.example/x")
    mine = await add_call(stack, page="https://shop.example/mine")
    async with signed_in(stack, "mine@shop.example") as owner:
        for path in (f"/dashboard/calls/{theirs}", f"/dashboard/calls/{theirs}/recording"):
            async with owner.get(path) as response:
                assert response.status == 404, path
        log = await (await owner.get("/dashboard/calls")).text()
        assert mine in log and theirs not in log
        # Asking for the other site by its id in the filter shows nothing either.
        log = await (await owner.get(f"/dashboard/calls?site={other.id}")).text()
        assert theirs not in log and mine not in log
        exported = await (await owner.get("/dashboard/export/calls.csv")).text()
        assert mine in exported and theirs not in exported


async def test_the_log_filters_and_pages_by_keyset(stack: Stack) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    anna = await stack.add_user("anna@shop.example", role="operator", name="Anna")
    ids = []
    for i in range(120):
        ids.append(
            await add_call(
                stack,
                created_at=NOW - timedelta(minutes=i),
                operator_id=anna.id if i % 3 == 0 else None,
                end_reason="completed" if i % 3 == 0 else "missed",
                answered_at=NOW if i % 3 == 0 else None,
            )
        )
    # Two calls in the same instant: the keyset must neither skip nor repeat one of them.
    twin = await add_call(stack, created_at=NOW - timedelta(minutes=50))
    chat = await add_chat(stack, created_at=NOW - timedelta(minutes=5, seconds=30))
    message = await add_left_message(stack, created_at=NOW - timedelta(minutes=7, seconds=30))
    await add_order(stack, "A-1", "120.00", "call", ids[3])

    async with signed_in(stack, "boss@shop.example") as owner:
        seen: list[str] = []
        url = "/dashboard/calls"
        pages = 0
        while url:
            html = await (await owner.get(url)).text()
            seen += _row_ids(html)
            pages += 1
            url = _next_url(html)
        assert pages == 3
        assert len(seen) == len(set(seen)) == 123
        assert set(seen) == {*ids, twin, chat, message}

        html = await (await owner.get("/dashboard/calls?end_reason=missed")).text()
        rows = _rows(html)
        assert rows and all(r["data-end-reason"] == "missed" for r in rows)
        assert chat not in html and message not in html

        html = await (await owner.get(f"/dashboard/calls?operator={anna.id}")).text()
        assert {r["data-call-id"] for r in _rows(html)} == set(ids[::3][:50])

        html = await (await owner.get("/dashboard/calls?channel=chat")).text()
        assert _row_ids(html) == [chat]

        html = await (await owner.get("/dashboard/calls?orders=with")).text()
        assert _row_ids(html) == [ids[3]]
        assert "120.00 EUR" in html

        day = NOW.date().isoformat()
        html = await (await owner.get(f"/dashboard/calls?from={day}&to={day}&channel=message")).text()
        assert _row_ids(html) == [message]

        async with owner.get("/dashboard/calls?after=garbage!") as response:
            assert response.status == 400


def _rows(html: str) -> list[dict[str, str]]:
    rows = []
    for tag in re.findall(r"<tr data-channel=[^>]*>", html):
        rows.append(dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', tag)))
    return rows


def _row_ids(html: str) -> list[str]:
    return [r.get("data-call-id") or r.get("data-chat-id") or r["data-message-id"] for r in _rows(html)]


def _next_url(html: str) -> str | None:
    match = re.search(r'<a href="([^"]+)" rel="next"', html)
    return match.group(1).replace("&amp;", "&") if match else None


async def test_visitor_data_is_shown_as_text(stack: Stack) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    visitor = await add_visitor(stack, stack.site.id, name="<img src=x onerror=alert(1)>")
    call_id = await add_call(
        stack,
        visitor_id=visitor,
        page="javascript:alert(1)",
        referrer='"><script>alert(2)</script>',
        context={"search": "<b>oak</b>", "utm": {"source": "<script>alert(3)</script>"}, "cart_value": 99.5},
    )
    async with signed_in(stack, "boss@shop.example") as owner:
        for path in ("/dashboard/calls", f"/dashboard/calls/{call_id}"):
            html = await (await owner.get(path)).text()
            assert "<script>alert" not in html and "<img src=x" not in html and "<b>oak" not in html
            assert 'href="javascript:' not in html
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "99.50" in html


async def test_a_form_without_its_token_is_refused_and_changes_nothing(stack: Stack) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    message_id = await add_left_message(stack)
    async with signed_in(stack, "boss@shop.example") as owner:
        for data in ({"status": "handled"}, {"status": "handled", "csrf": "0" * 64}):
            async with owner.post(f"/dashboard/messages/{message_id}/status", data=data) as response:
                assert response.status == 403
        async with owner.post(
            "/dashboard/operators", data={"email": "x@y.example", "password": "12345678"}
        ) as r:
            assert r.status == 403
        async with owner.post("/dashboard/erase", data={"email": "a@b.example"}) as response:
            assert response.status == 403
        async with stack.database.session() as session:
            assert (await session.get(LeftMessage, message_id)).status == "new"  # type: ignore[union-attr]
            assert await session.scalar(select(User).where(User.email == "x@y.example")) is None
            assert await session.scalar(select(func.count()).select_from(AuditEntry)) == 0

        token = csrf_token(await (await owner.get("/dashboard/messages")).text())
        async with owner.post(
            f"/dashboard/messages/{message_id}/status", data={"status": "handled", "csrf": token}
        ) as response:
            assert response.status == 200
            assert 'data-status="handled"' in await response.text()


async def test_a_call_page_shows_the_journey_quality_transcript_and_orders(
    stack: Stack, tmp_path: Path
) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    anna = await stack.add_user("anna@shop.example", role="operator", name="Anna")
    recording = opus_file(tmp_path / "call.ogg")
    call_id = await add_call(
        stack,
        operator_id=anna.id,
        page="https://shop.example/products/oak-table",
        title="Oak table",
        referrer="https://search.example/?q=table",
        context={
            "utm": {"source": "newsletter"},
            "search": "oak table",
            "cart_value": 450.0,
            "currency": "EUR",
        },
        quality={
            "shopper": {"packets_lost": 3, "jitter_ms": 4.2, "rtt_ms": 31, "relayed": False},
            "operator": {"packets_lost": 0, "jitter_ms": 1.1, "rtt_ms": 2, "relayed": True},
        },
        recording_path=str(recording),
    )
    await add_chat(stack, call_id=call_id, messages=["Is it solid oak?", "Yes it is"])
    await add_order(stack, "W-100", "450.00", "call", call_id)
    await add_order(stack, "W-200", "80.00", None, None)
    async with signed_in(stack, "boss@shop.example") as owner:
        html = await (await owner.get(f"/dashboard/calls/{call_id}")).text()
        for text in (
            "Oak table",
            "newsletter",
            "oak table",
            "450.00",
            "Anna",
            "Is it solid oak?",
            "31 ms",
            "W-100",
        ):
            assert text in html, text
        player = f'data-testid="dash-recording" controls preload="metadata" src="/dashboard/calls/{call_id}/'
        assert player + 'recording"' in html

        async with owner.get(
            f"/dashboard/calls/{call_id}/recording", headers={"Range": "bytes=0-99"}
        ) as response:
            assert response.status == 206
            assert response.headers["Content-Type"] == "audio/ogg"
            assert len(await response.read()) == 100
        async with owner.get(f"/dashboard/calls/{call_id}/recording?download=1") as response:
            assert "attachment" in response.headers["Content-Disposition"]
            assert await response.read() == recording.read_bytes()

        token = csrf_token(html)
        await owner.post(f"/dashboard/calls/{call_id}/attribution", data={"csrf": token, "order_id": "W-200"})
        await owner.post(
            f"/dashboard/calls/{call_id}/attribution",
            data={"csrf": token, "order_id": "W-100", "action": "unlink"},
        )
    async with stack.database.session() as session:
        orders = {o.order_id: o for o in await session.scalars(select(Order))}
        assert (orders["W-200"].channel, orders["W-200"].conversation_id) == ("call", call_id)
        assert orders["W-200"].attributed_by == "manual"
        assert orders["W-100"].channel is None
        assert await session.scalar(select(func.count()).where(AuditEntry.action == "order.attributed")) == 2


async def test_the_overview_counts_calls_and_attributed_revenue(stack: Stack) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    anna = await stack.add_user("anna@shop.example", role="operator", name="Anna")
    sold = await add_call(stack, operator_id=anna.id)
    await add_call(stack, operator_id=anna.id)
    await add_call(stack, end_reason="missed", answered_at=None, ended_at=NOW)
    chat = await add_chat(stack, operator_id=anna.id)
    message = await add_left_message(stack)
    await add_order(stack, "1", "100.00", "call", sold)
    await add_order(stack, "2", "25.50", "chat", chat)
    await add_order(stack, "3", "10.00", "message", message)
    day = NOW.date().isoformat()
    async with signed_in(stack, "boss@shop.example") as owner:
        html = await (await owner.get(f"/dashboard/?from={day}&to={day}")).text()
    assert 'data-figure="calls">3<' in html
    assert 'data-figure="missed">1<' in html
    assert 'data-figure="answer-rate">66.7 %<' in html
    assert 'data-channel="call">100.00 EUR<' in html
    assert 'data-channel="chat">25.50 EUR<' in html
    assert 'data-channel="message">10.00 EUR<' in html
    assert 'data-figure="conversion">60.0 %<' in html  # 3 of 5 conversations sold
    assert "<svg" in html and "125.50 EUR" in html  # Anna: her call and her chat


async def test_retention_deletes_old_recordings_and_keeps_new_ones(stack: Stack, tmp_path: Path) -> None:
    async with stack.database.session() as session:
        site = await session.get(Site, stack.site.id)
        assert site is not None
        site.retention_days = 30
    old_file, new_file = opus_file(tmp_path / "old.ogg"), opus_file(tmp_path / "new.ogg")
    old = await add_call(stack, created_at=NOW - timedelta(days=31), recording_path=str(old_file))
    new = await add_call(stack, created_at=NOW - timedelta(days=29), recording_path=str(new_file))

    assert await expire_recordings(stack.database, stack.settings.var_dir, NOW) == 1
    assert not old_file.exists() and new_file.exists()
    assert (await stack.call(old)).recording_path is None
    assert (await stack.call(new)).recording_path == str(new_file)
    # A day later the second one goes too; nothing is left to do after that.
    assert await expire_recordings(stack.database, stack.settings.var_dir, NOW + timedelta(days=2)) == 1
    assert not new_file.exists()
    assert await expire_recordings(stack.database, stack.settings.var_dir, NOW + timedelta(days=2)) == 0


async def test_erasing_a_person_removes_their_data_and_is_audited(stack: Stack, tmp_path: Path) -> None:
    boss = await add_owner(stack, "boss@shop.example")
    jane = await add_visitor(stack, stack.site.id, name="Jane", email="jane@mail.example", phone="+3161234")
    other = await add_visitor(stack, stack.site.id, name="Otto", email="otto@mail.example")
    recording = opus_file(tmp_path / "jane.ogg")
    kept = opus_file(tmp_path / "otto.ogg")
    jane_call = await add_call(stack, visitor_id=jane, recording_path=str(recording))
    otto_call = await add_call(stack, visitor_id=other, recording_path=str(kept))
    jane_chat = await add_chat(stack, visitor_id=jane, messages=["my address is …", "thanks"])
    await add_chat(stack, visitor_id=other, messages=["hello"])
    await add_left_message(stack, email="Jane@Mail.example", name="Jane", body="call me")
    await add_left_message(stack, email="otto@mail.example", name="Otto")
    await add_order(stack, "J-1", "50.00", "call", jane_call, email="jane@mail.example")

    async with signed_in(stack, "boss@shop.example") as owner:
        token = csrf_token(await (await owner.get("/dashboard/erase")).text())
        async with owner.post("/dashboard/erase", data={"csrf": token, "email": "JANE@mail.example"}) as r:
            html = await r.text()
            assert "Erased 1 recording(s), 2 chat message(s), 1 left message(s)" in html
            assert "visitor.erased" in html

    assert not recording.exists() and kept.exists()
    assert (await stack.call(jane_call)).recording_path is None
    assert (await stack.call(otto_call)).recording_path == str(kept)
    async with stack.database.session() as session:
        person = await session.get(Visitor, jane)
        assert person is not None and (person.name, person.email, person.phone) == (None, None, None)
        assert (await session.get(Visitor, other)).email == "otto@mail.example"  # type: ignore[union-attr]
        assert await session.scalar(select(func.count()).where(ChatMessage.chat_id == jane_chat)) == 0
        assert await session.scalar(select(func.count()).select_from(ChatMessage)) == 1
        assert [m.name for m in await session.scalars(select(LeftMessage))] == ["Otto"]
        order = await session.scalar(select(Order))
        assert order is not None and order.email is None and order.total == 50
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "visitor.erased"))
        assert entry is not None and entry.actor_id == boss and entry.site_id == stack.site.id
        assert entry.detail["recordings"] == 1 and entry.detail["chat_messages"] == 2
        assert entry.detail["left_messages"] == 1 and entry.detail["visitors"] == 1
        assert "jane" not in str(entry.detail).lower()
        assert await session.scalar(select(func.count()).select_from(Call)) == 2


async def test_owners_manage_operators_and_sites(stack: Stack) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    async with signed_in(stack, "boss@shop.example") as owner:
        token = csrf_token(await (await owner.get("/dashboard/operators")).text())
        async with owner.post(
            "/dashboard/operators",
            data={"csrf": token, "email": "new@shop.example", "password": "long enough", "name": "Nia"},
        ) as response:
            assert "can now sign in" in await response.text()
        async with stack.database.session() as session:
            nia = await session.scalar(select(User).where(User.email == "new@shop.example"))
            assert nia is not None and nia.role == "operator"
        await owner.post(f"/dashboard/operators/{nia.id}/disabled", data={"csrf": token, "disabled": "1"})
        async with owner.post(
            f"/dashboard/operators/{nia.id}/password", data={"csrf": token, "password": "short"}
        ) as response:
            assert "at least 8" in await response.text()
        await owner.post(
            f"/dashboard/operators/{nia.id}/password", data={"csrf": token, "password": "brand new pw"}
        )

        async with owner.post(
            f"/dashboard/sites/{stack.site.id}",
            data={
                "csrf": token,
                "origins": "https://Shop.example:443/\nhttps://www.shop.example",
                "ring_strategy": "ring_all",
                "ring_timeout": "20",
                "records_calls": "on",
                "retention_days": "90",
                "notify_email": "team@shop.example",
                "webhook_secret": "shpss_abc",
                "attribution_days": "14",
            },
        ) as response:
            assert "Saved the settings" in await response.text()
        async with owner.post(
            f"/dashboard/sites/{stack.site.id}",
            data={
                "csrf": token,
                "origins": "not a url",
                "ring_strategy": "ring_all",
                "attribution_days": "7",
            },
        ) as response:
            assert "Not an origin" in await response.text()
    async with stack.database.session() as session:
        nia = await session.get(User, nia.id)
        assert nia is not None and nia.disabled
        site = await session.get(Site, stack.site.id)
        assert site is not None
        assert site.allowed_origins == ["https://shop.example", "https://www.shop.example"]
        assert (site.ring_strategy, site.ring_timeout, site.records_calls) == ("ring_all", 20.0, True)
        assert (site.retention_days, site.notify_email, site.webhook_secret) == (
            90,
            "team@shop.example",
            "shpss_abc",
        )
        assert site.attribution_days == 14


async def test_csv_exports_stream_calls_and_orders(stack: Stack) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    await add_call(stack, created_at=NOW - timedelta(seconds=1), page='=HYPERLINK("http://evil")')
    call_id = await add_call(stack, context={"utm": {"source": "mail"}})
    await add_order(stack, "Q-1", "12.30", "call", call_id)
    async with signed_in(stack, "boss@shop.example") as owner:
        async with owner.get("/dashboard/export/calls.csv") as response:
            assert response.headers["Content-Type"].startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(await response.text())))
        orders = list(
            csv.DictReader(io.StringIO(await (await owner.get("/dashboard/export/orders.csv")).text()))
        )
    assert len(rows) == 2
    assert {r["utm_source"] for r in rows} == {"mail", ""}
    assert any(r["page"].startswith("'=") for r in rows)  # no formula injection
    assert orders == [
        {
            "order_id": "Q-1",
            "site": "Test shop",
            "created_at": NOW.isoformat(),
            "total": "12.30",
            "currency": "EUR",
            "source": "api",
            "channel": "call",
            "conversation_id": call_id,
            "attributed_by": "token",
            "status": "paid",
            "refunded_total": "0.00",
            "revenue": "12.30",
        }
    ]


async def test_operator_activity_counts_rung_missed_and_declined_calls(stack: Stack) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    anna = await stack.add_user("anna@shop.example", role="operator", name="Anna")
    ben = await stack.add_user("ben@shop.example", role="operator", name="Ben")
    answered = await add_call(stack, operator_id=anna.id)
    timed_out = await add_call(stack, operator_id=ben.id)
    declined = await add_call(stack, end_reason="missed", answered_at=None)
    async with stack.database.session() as session:
        for call_id, operator, name in [
            (timed_out, anna.id, "call.rang"),
            (timed_out, anna.id, "call.ring_timeout"),
            (timed_out, ben.id, "call.rang"),
            (declined, anna.id, "call.rang"),
            (declined, anna.id, "call.declined"),
            (answered, anna.id, "call.rang"),
        ]:
            session.add(CallEvent(call_id=call_id, at=NOW, name=name, operator_id=operator, detail={}))
    day = NOW.date().isoformat()
    async with signed_in(stack, "boss@shop.example") as owner:
        html = await (await owner.get(f"/dashboard/operators?from={day}&to={day}")).text()
    row = html[html.index(f'data-operator-id="{anna.id}"') :]
    row = row[: row.index("</tr>")]
    assert 'data-figure="answered">1<' in row
    assert 'data-figure="missed">1<' in row
    assert 'data-figure="declined">1<' in row
    assert "1:30" in row  # 90 s of talk


async def test_settled_days_are_counted_once_and_live_days_every_time(stack: Stack) -> None:
    today = NOW.date()
    await add_call(stack, created_at=NOW - timedelta(days=5))
    await add_call(stack, created_at=NOW - timedelta(days=5), end_reason="missed", answered_at=None)
    await add_call(stack, created_at=NOW)
    start = today - timedelta(days=6)
    async with stack.database.session() as session:
        first = await daily.call_days(session, [stack.site.id], start, today, today=today)
    assert first[today - timedelta(days=5)].calls == 2 and first[today - timedelta(days=5)].missed == 1
    assert first[today].calls == 1 and round(first[today].talk_seconds) == 90
    await add_call(stack, created_at=NOW + timedelta(minutes=1))
    async with stack.database.session() as session:
        again = await daily.call_days(session, [stack.site.id], start, today, today=today)
        stored = await session.scalar(select(func.count()).select_from(daily.day_figures))
    assert again[today - timedelta(days=5)] == first[today - timedelta(days=5)]
    assert again[today].calls == 2  # today is still counted live
    assert stored == 5  # the settled days start..today-2, one row each, empty ones too


async def test_impossible_filters_are_a_400_page_not_a_500(stack: Stack) -> None:
    """Huge ids, dates whose next day Python cannot hold, nonsense dates, damaged page links."""
    await stack.add_user("boss@shop.example", role="owner")
    dated = ["/dashboard/", "/dashboard/calls", "/dashboard/operators", "/dashboard/export/orders.csv"]
    log_only = ["/dashboard/calls"]  # the other pages have no such filter and ignore it
    cases = [
        ("site=9223372036854775808", log_only),
        ("operator=99999999999999999999", log_only),
        ("operator=1_000", log_only),
        ("after=" + "x" * 300, log_only),
        ("after=OTk5OS0xMi0zMVQyMzo1OTo1OS0wMTowMHx4", log_only),  # 9999-12-31T23:59:59-01:00|x
        ("to=9999-12-31", dated),
        ("from=0001-01-01", dated),
        ("to=0001-01-05", dated),
        ("from=2024-02-30", dated),
        ("to=yesterday", dated),
    ]
    async with signed_in(stack, "boss@shop.example") as owner:
        for query, refusing in cases:
            for page in dated:
                async with owner.get(f"{page}?{query}") as response:
                    text = await response.text()
                    assert response.status == (400 if page in refusing else 200), (page, query, text[:200])
                    if page in refusing:
                        assert response.content_type == "text/html" and "<h1>" in text
        # A site id in the path of a form that is no number is the same page (it was a 500 once).
        async with owner.get("/dashboard/sites") as response:
            token = csrf_token(await response.text())
        async with owner.post("/dashboard/sites/99999999999999999999", data={"csrf": token}) as response:
            assert response.status == 400 and "Site must be a whole number" in await response.text()


async def test_every_cell_a_spreadsheet_would_run_is_neutralised(stack: Stack) -> None:
    """OWASP's CSV-injection advice: a leading = + - @, TAB, CR or LF (or a formula behind blanks)."""
    await stack.add_user("boss@shop.example", role="owner")
    risky = ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "\n=1", "\tx", "\rx", " =1", "\u00a0@x"]
    harmless = ["x=1", "a-b", "1.5", "", "plain"]
    for n, page in enumerate(risky + harmless):
        await add_call(stack, created_at=NOW + timedelta(seconds=n), page=page)
    async with (
        signed_in(stack, "boss@shop.example") as owner,
        owner.get("/dashboard/export/calls.csv") as response,
    ):
        rows = list(csv.DictReader(io.StringIO(await response.text(), newline="")))
    assert [r["page"] for r in rows] == ["'" + p for p in risky] + harmless


async def test_marking_a_message_handled_in_the_dashboard_tells_open_softphones(stack: Stack) -> None:
    await stack.add_user("boss@shop.example", role="owner")
    message_id = await add_left_message(stack)
    anna = await stack.sockets.operator("anna@shop.example")
    assert [m["id"] for m in anna.hello["left_messages"]] == [message_id]
    async with signed_in(stack, "boss@shop.example") as owner:
        token = csrf_token(await (await owner.get("/dashboard/messages")).text())
        async with owner.post(
            f"/dashboard/messages/{message_id}/status", data={"status": "handled", "csrf": token}
        ) as response:
            assert response.status == 200
    await anna.receive("message.handled", lambda f: f["id"] == message_id)
    async with stack.database.session() as session:
        assert (await session.get(LeftMessage, message_id)).status == "handled"  # type: ignore[union-attr]

"""The `callserver` command: serve, demo, site add, user add, webhook add, db upgrade."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from callserver import accounts, events, sites
from callserver.errors import CallserverError
from callserver.logs import setup as setup_logging
from callserver.settings import ConfigError, Settings, load_settings
from callserver.store.database import Database

T = TypeVar("T")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        getattr(args, "config", None), host=getattr(args, "host", None), port=getattr(args, "port", None)
    )


def _print(args: argparse.Namespace, data: Mapping[str, object], text: str) -> None:
    print(json.dumps(data) if args.json else text)


async def _with_database(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    database = Database(settings.effective_database_url)
    try:
        await database.upgrade()
        async with database.session() as session:
            return await work(session)
    finally:
        await database.close()


def cmd_serve(args: argparse.Namespace) -> int:
    from callserver.app import create_app
    from callserver.running import run, serve_apps
    from callserver.web.keys import DRAIN

    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format)

    async def ready() -> None:
        print(f"callserver listening on http://{settings.host}:{settings.port}", flush=True)

    app = create_app(settings)
    # A cluster member drains on SIGTERM (the balancer has other nodes); a node alone stops at once.
    drains = [app[DRAIN]] if settings.redis_url else []
    run(serve_apps([(app, settings.host, settings.port)], ready, drains))
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    from callserver.cluster.nodes import list_nodes, order_drain
    from callserver.cluster.redis import RedisLink, RedisUnavailable

    settings = _settings(args)
    if not settings.redis_url:
        raise ConfigError("callserver nodes needs redis_url (CALLSERVER_REDIS_URL): a node is alone without")

    async def work() -> Any:
        link = RedisLink(settings.redis_url)
        try:
            if args.action == "drain":
                return await link.run("the drain order", lambda r: order_drain(r, args.name))
            return await link.run("listing the nodes", lambda r: list_nodes(r, time.time()))
        finally:
            await link.close()

    try:
        result = asyncio.run(work())
    except RedisUnavailable as e:
        print(f"callserver: {e}", file=sys.stderr)
        return 2
    if args.action == "drain":
        if not result:
            print(f"callserver: no node {args.name!r} is running", file=sys.stderr)
            return 2
        _print(args, {"name": args.name, "state": "draining"}, f"Node {args.name} drains (next heartbeat).")
        return 0
    rows = [
        f"{n['name']:<24} {n['address'] or '-':<28} {n['state']:<9} {n['calls']:>5} "
        f"{n['sockets']['operators']:>9} {n['sockets']['visitors']:>8} {n['heartbeat_age_s']:>6.1f}s"
        for n in result
    ]
    header = f"{'NAME':<24} {'ADDRESS':<28} {'STATE':<9} {'CALLS':>5} {'OPERATORS':>9} {'VISITORS':>8} BEAT"
    _print(args, {"nodes": result}, "\n".join([header, *rows]) if rows else "No node is registered.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from callserver.demo import run_demo

    return run_demo(_settings(args), shop_port=args.shop_port)


def cmd_site_add(args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> sites.NewSite:
        return await sites.create_site(
            session, args.name, args.origin, notify_email=args.notify_email, records_calls=args.record_calls
        )

    site = asyncio.run(_with_database(_settings(args), work))
    _print(
        args,
        {"key": site.key, "secret": site.secret},
        f"Site {site.name!r} created.\n"
        f"  site key (public, for the widget):     {site.key}\n"
        f"  site secret (private, for orders API): {site.secret}\n"
        f"Embed on every page of the shop:\n"
        f'  <script src="{_settings(args).base_url}/widget.js" data-site="{site.key}" async></script>',
    )
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> accounts.Account:
        linked = [await sites.site_by_key(session, key) for key in args.site or []]
        return await accounts.create_user(session, args.email, args.password, args.role, linked, args.name)

    account = asyncio.run(_with_database(_settings(args), work))
    where = f"sites {', '.join(args.site)}" if args.site else "every site"
    _print(
        args,
        {"id": account.id, "email": account.email},
        f"{account.role.capitalize()} {account.email} created (id {account.id}), working for {where}.",
    )
    return 0


def cmd_webhook_add(args: argparse.Namespace) -> int:
    from callserver.webhooks.subscriptions import NewSubscription, add_subscription

    async def work(session: AsyncSession) -> tuple[NewSubscription, str]:
        site = await sites.site_by_key(session, args.site)
        created = await add_subscription(
            session, site.id, args.url, args.event or [], allow_private_network=args.allow_private_network
        )
        return created, site.name

    created, site_name = asyncio.run(_with_database(_settings(args), work))
    heard = ", ".join(args.event) if args.event else "every event"
    _print(
        args,
        {"id": created.id, "secret": created.secret},
        f"Webhook {created.id} of {site_name!r} created: {args.url} hears {heard}.\n"
        f"  signing secret (shown once): {created.secret}",
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def upgrade() -> None:
        database = Database(settings.effective_database_url)
        try:
            await database.upgrade()
        finally:
            await database.close()

    asyncio.run(upgrade())
    print("Database schema is up to date.")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="callserver", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    def command(
        name: str, help: str, parent: argparse._SubParsersAction[argparse.ArgumentParser] = commands
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        sub.add_argument("--config", type=Path, help="TOML configuration file")
        return sub

    serve = command("serve", "Run the server.")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(run=cmd_serve)

    demo = command("demo", "Run everything on this machine with a demo shop, operator and owner.")
    demo.add_argument("--host")
    demo.add_argument("--port", type=int)
    demo.add_argument("--shop-port", type=int, default=8081, help="port of the demo shop (default 8081)")
    demo.set_defaults(run=cmd_demo)

    site = commands.add_parser("site", help="Manage sites.").add_subparsers(dest="action", required=True)
    site_add = command("add", "Add a site (a shop); prints its key and secret.", site)
    site_add.add_argument("--name", required=True)
    site_add.add_argument("--origin", action="append", required=True, help="allowed page origin (repeatable)")
    site_add.add_argument("--notify-email", help="where left messages are mailed")
    site_add.add_argument("--record-calls", action="store_true", help="record this site's calls")
    site_add.add_argument("--json", action="store_true", help="print one JSON object")
    site_add.set_defaults(run=cmd_site_add)

    user = commands.add_parser("user", help="Manage users.").add_subparsers(dest="action", required=True)
    user_add = command("add", "Add an operator or an owner.", user)
    user_add.add_argument("--email", required=True)
    user_add.add_argument("--password", required=True)
    user_add.add_argument("--role", required=True, choices=accounts.ROLES)
    user_add.add_argument("--name", default="")
    user_add.add_argument("--site", action="append", help="site key the user works for (repeatable)")
    user_add.add_argument("--json", action="store_true", help="print one JSON object")
    user_add.set_defaults(run=cmd_user_add)

    webhook = commands.add_parser("webhook", help="Manage outbound webhooks.").add_subparsers(
        dest="action", required=True
    )
    webhook_add = command("add", "Send a site's events to a URL; prints its id and signing secret.", webhook)
    webhook_add.add_argument("--site", required=True, help="the site key")
    webhook_add.add_argument("--url", required=True, help="http(s) URL that receives the events")
    webhook_add.add_argument(
        "--event",
        action="append",
        choices=events.PUBLISHED,
        help="an event to send (repeatable; none: every event)",
    )
    webhook_add.add_argument(
        "--allow-private-network",
        action="store_true",
        help="allow a URL on loopback, private or link-local addresses",
    )
    webhook_add.add_argument("--json", action="store_true", help="print one JSON object")
    webhook_add.set_defaults(run=cmd_webhook_add)

    nodes = command("nodes", "The nodes of a cluster: name, address, state, calls, sockets, last heartbeat.")
    nodes.add_argument("--json", action="store_true", help="print one JSON object")
    nodes.set_defaults(run=cmd_nodes, action=None)
    node_actions = nodes.add_subparsers(dest="action")
    drain = command("drain", "Drain a node: no new calls or chats, then it exits.", node_actions)
    drain.add_argument("name", help="the node's name, as `callserver nodes` lists it")
    drain.add_argument("--json", action="store_true", help="print one JSON object")
    drain.set_defaults(run=cmd_nodes)

    db = commands.add_parser("db", help="Database maintenance.").add_subparsers(dest="action", required=True)
    command("upgrade", "Apply schema migrations.", db).set_defaults(run=cmd_db_upgrade)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except (CallserverError, ConfigError) as e:
        print(f"callserver: {e}", file=sys.stderr)
        return 2
    return result

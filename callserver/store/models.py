"""The tables. Names follow the shop's language: sites, operators and owners, visitors, calls."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from callserver.jsontypes import JsonObject


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            from datetime import UTC

            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[object, object]] = {
        datetime: UTCDateTime,
        JsonObject: JSON,
        dict[str, float]: JSON,
        dict[str, str]: JSON,
        dict[str, dict[str, str]]: JSON,
        list[str]: JSON,
    }


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(64), unique=True)
    # Kept readable: it is the HMAC key for WooCommerce webhooks and the bearer token of the API.
    secret: Mapped[str] = mapped_column(String(128))
    webhook_secret: Mapped[str | None] = mapped_column(String(256))
    allowed_origins: Mapped[list[str]] = mapped_column(default=list)
    ring_strategy: Mapped[str] = mapped_column(String(20), default="longest_idle")
    ring_timeout: Mapped[float | None] = mapped_column(Float)
    records_calls: Mapped[bool] = mapped_column(Boolean, default=False)
    notify_email: Mapped[str | None] = mapped_column(String(320))
    attribution_days: Mapped[int] = mapped_column(Integer, default=7)
    retention_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    # Migration 0004_visitors: the salesperson's eye (callserver/visitors, callserver/hours.py, i18n).
    score_weights: Mapped[dict[str, float] | None]  # ScoreWeights overrides; None: the defaults
    invite_rules: Mapped[list[JsonObject]] = mapped_column(JSON, default=list)
    hours: Mapped[JsonObject | None]  # WorkingHours; None: always open
    language: Mapped[str | None] = mapped_column(String(8))  # forces the widget's language
    texts: Mapped[dict[str, dict[str, str]]] = mapped_column(default=dict)  # {"*"|lang: {key: text}}
    # The conversion action's name in the Google Ads export (0006_sources); None: the default.
    google_ads_conversion: Mapped[str | None] = mapped_column(String(100))
    # Whether the widget offers "call me back" when nobody can answer (0007_callbacks); on by default.
    callbacks: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]

    sites: Mapped[list[Site]] = relationship(secondary="user_sites", lazy="selectin")


class UserSite(Base):
    """Which sites a user works for; a user linked to none works for every site."""

    __tablename__ = "user_sites"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)


class AuthSession(Base):
    __tablename__ = "auth_sessions"

    # SHA-256 of the cookie value: a leaked table does not log anyone in.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class Visitor(Base):
    __tablename__ = "visitors"
    __table_args__ = (UniqueConstraint("site_id", "token"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    token: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    phone: Mapped[str | None] = mapped_column(String(50), index=True)
    country: Mapped[str | None] = mapped_column(String(2))
    device: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    invitations: Mapped[int] = mapped_column(Integer, default=0)  # sent to this visitor (0004_visitors)
    invitation_dismissed_at: Mapped[datetime | None]  # they closed the bubble: never bother them again


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_site_created", "site_id", "created_at"),
        Index("ix_calls_state", "state"),
        # The owner's log filtered by operator, and reports across sites (0003_dashboard).
        Index("ix_calls_site_operator_created", "site_id", "operator_id", "created_at"),
        # The Sources page and the revenue report by source or campaign, read from the index (0007).
        Index(
            "ix_calls_site_created_sources",
            "site_id",
            "created_at",
            "source",
            "medium",
            "campaign",
            "first_source",
            "first_medium",
            "first_campaign",
        ),
        Index("ix_calls_created", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    visitor_id: Mapped[int | None] = mapped_column(ForeignKey("visitors.id", ondelete="SET NULL"), index=True)
    state: Mapped[str] = mapped_column(String(20))
    end_reason: Mapped[str | None] = mapped_column(String(20))
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    page: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    referrer: Mapped[str | None] = mapped_column(Text)
    context: Mapped[JsonObject] = mapped_column(default=dict)
    quality: Mapped[JsonObject | None]
    recording_path: Mapped[str | None] = mapped_column(Text)
    # Where the visitor came from (0006_sources; callserver/orders/sources.py): both touches as the
    # widget kept them, the last touch's labels the reports group by, the first touch's, the click id.
    touches: Mapped[JsonObject | None]
    source: Mapped[str | None] = mapped_column(String(200))
    medium: Mapped[str | None] = mapped_column(String(200))
    campaign: Mapped[str | None] = mapped_column(String(200))
    first_source: Mapped[str | None] = mapped_column(String(200))
    first_medium: Mapped[str | None] = mapped_column(String(200))
    first_campaign: Mapped[str | None] = mapped_column(String(200))
    gclid: Mapped[str | None] = mapped_column(String(200))

    operator: Mapped[User | None] = relationship(lazy="selectin")
    visitor: Mapped[Visitor | None] = relationship(lazy="selectin")
    events: Mapped[list[CallEvent]] = relationship(
        lazy="raise", order_by="CallEvent.id", cascade="all, delete-orphan"
    )


class CallEvent(Base):
    """One step of a call's timeline (`call.ringing`, `call.rang`, `call.answered`, …)."""

    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    name: Mapped[str] = mapped_column(String(40))
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    detail: Mapped[JsonObject] = mapped_column(default=dict)


class Chat(Base):
    """A text conversation in the widget; a call that falls back becomes a chat (`call_id`)."""

    __tablename__ = "chats"
    __table_args__ = (
        Index("ix_chats_site_created", "site_id", "created_at"),
        Index("ix_chats_site_operator_created", "site_id", "operator_id", "created_at"),
        Index("ix_chats_call_id", "call_id"),
        Index("ix_chats_visitor_state", "visitor_id", "state"),
        Index(
            "ix_chats_site_created_sources",
            "site_id",
            "created_at",
            "source",
            "medium",
            "campaign",
            "first_source",
            "first_medium",
            "first_campaign",
        ),  # 0007
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    visitor_id: Mapped[int | None] = mapped_column(ForeignKey("visitors.id", ondelete="SET NULL"), index=True)
    call_id: Mapped[str | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(20))  # waiting, open, closed
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    page: Mapped[str | None] = mapped_column(Text)
    context: Mapped[JsonObject] = mapped_column(default=dict)
    # Where the visitor came from (0006_sources; callserver/orders/sources.py): both touches as the
    # widget kept them, the last touch's labels the reports group by, the first touch's, the click id.
    touches: Mapped[JsonObject | None]
    source: Mapped[str | None] = mapped_column(String(200))
    medium: Mapped[str | None] = mapped_column(String(200))
    campaign: Mapped[str | None] = mapped_column(String(200))
    first_source: Mapped[str | None] = mapped_column(String(200))
    first_medium: Mapped[str | None] = mapped_column(String(200))
    first_campaign: Mapped[str | None] = mapped_column(String(200))
    gclid: Mapped[str | None] = mapped_column(String(200))


class ChatMessage(Base):
    __tablename__ = "chat_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chat_id: Mapped[str] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    sender: Mapped[str] = mapped_column(String(10))  # visitor, operator, system
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    read_at: Mapped[datetime | None]


class LeftMessage(Base):
    """What a shopper left in the offline form when nobody could talk."""

    __tablename__ = "left_messages"
    __table_args__ = (Index("ix_left_messages_site_created", "site_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    visitor_id: Mapped[int | None] = mapped_column(ForeignKey("visitors.id", ondelete="SET NULL"), index=True)
    call_id: Mapped[str | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(50))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="new")  # new, handled
    mailed_at: Mapped[datetime | None]
    page: Mapped[str | None] = mapped_column(Text)
    # The mail to the site (0005_left_mail): pending, sent, retrying, failed; None when none is sent.
    mail_state: Mapped[str | None] = mapped_column(String(20))
    mail_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    mail_error: Mapped[str | None] = mapped_column(Text)
    mail_next_at: Mapped[datetime | None] = mapped_column(index=True)  # when the next try is due
    # Where the visitor came from (0006_sources; callserver/orders/sources.py): both touches as the
    # widget kept them, the last touch's labels the reports group by, the first touch's, the click id.
    touches: Mapped[JsonObject | None]
    source: Mapped[str | None] = mapped_column(String(200))
    medium: Mapped[str | None] = mapped_column(String(200))
    campaign: Mapped[str | None] = mapped_column(String(200))
    first_source: Mapped[str | None] = mapped_column(String(200))
    first_medium: Mapped[str | None] = mapped_column(String(200))
    first_campaign: Mapped[str | None] = mapped_column(String(200))
    gclid: Mapped[str | None] = mapped_column(String(200))


class CallbackRequest(Base):
    """A shopper's "call me back" when nobody could answer (0007_callbacks): the number and its outcome."""

    __tablename__ = "callback_requests"
    __table_args__ = (Index("ix_callback_requests_site_created", "site_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    visitor_token: Mapped[str | None] = mapped_column(String(64))
    call_id: Mapped[str | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    phone: Mapped[str] = mapped_column(String(50))
    preferred_time: Mapped[str | None] = mapped_column(String(200))
    page: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(20))  # reached, no_answer, wrong_number
    handled_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    handled_at: Mapped[datetime | None]
    # The mail to the site, retried as a left message's is (callserver/callbacks.py).
    mail_state: Mapped[str | None] = mapped_column(String(20))
    mail_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    mail_error: Mapped[str | None] = mapped_column(Text)
    mail_next_at: Mapped[datetime | None] = mapped_column(index=True)


class Order(Base):
    """An order the shop reported, and the conversation it is attributed to (if any)."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("site_id", "order_id"),
        Index("ix_orders_site_created", "site_id", "created_at"),
        Index("ix_orders_conversation", "channel", "conversation_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    order_id: Mapped[str] = mapped_column(String(100))
    # What the shop shows people ("#1001"); `order_id` is the platform's stable id (migration 0003_orders).
    number: Mapped[str | None] = mapped_column(String(100))
    total: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    currency: Mapped[str] = mapped_column(String(3))
    visitor_token: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime]
    received_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(20))  # api, shopify, woocommerce
    channel: Mapped[str | None] = mapped_column(String(10))  # call, chat, message
    conversation_id: Mapped[str | None] = mapped_column(String(32))
    attributed_by: Mapped[str | None] = mapped_column(String(10))  # token, email, phone, manual
    # Who attributed it by hand (`attributed_by` manual), migration 0006_order_life.
    attributed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # An order's life (0006_order_life): pending, paid, partially_refunded, refunded, cancelled.
    status: Mapped[str] = mapped_column(String(20), default="paid", server_default="paid")
    refunded_total: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal(0), server_default="0")
    # The platform's refunds by their id (amounts as text), so a refund reported twice counts once.
    refunds: Mapped[dict[str, str] | None] = mapped_column()
    # When the shop last changed the order (as it says); an older report than this is ignored.
    updated_at: Mapped[datetime | None]


class ConversationOutcome(Base):
    """What came of a call or chat (0007_after_conversation): the shopper's rating, the operator's note
    and the order number they took in it. One row per conversation, made by whichever comes first."""

    __tablename__ = "conversation_outcomes"
    __table_args__ = (Index("ix_conversation_outcomes_site_order", "site_id", "order_ref"),)

    conversation_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(10))  # call, chat
    csat_score: Mapped[int | None] = mapped_column(Integer)  # 1–5
    csat_comment: Mapped[str | None] = mapped_column(Text)
    csat_at: Mapped[datetime | None]
    csat_dismissed_at: Mapped[datetime | None]  # closed unanswered: never asked again
    note: Mapped[str | None] = mapped_column(Text)
    # The order number the operator took, as the shop shows it without "#" (orders/attribution.py).
    order_ref: Mapped[str | None] = mapped_column(String(100))
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime | None]


class ConversationTag(Base):
    """A tag an operator put on a call or chat (0007_after_conversation); the log filters by them."""

    __tablename__ = "conversation_tags"
    __table_args__ = (Index("ix_conversation_tags_site_tag", "site_id", "tag"),)

    conversation_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tag: Mapped[str] = mapped_column(String(50), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))


class AuditEntry(Base):
    """Things done to people's data that must be answerable later (erasure, manual attribution)."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime]
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="SET NULL"))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(40))
    detail: Mapped[JsonObject] = mapped_column(default=dict)


class CallDayFigures(Base):
    """A finished day's call figures per site, kept so the overview need not count them again."""

    __tablename__ = "dashboard_call_days"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    calls: Mapped[int] = mapped_column(Integer)
    answered: Mapped[int] = mapped_column(Integer)
    missed: Mapped[int] = mapped_column(Integer)
    abandoned: Mapped[int] = mapped_column(Integer)
    wait_seconds: Mapped[float] = mapped_column(Float)
    talk_seconds: Mapped[float] = mapped_column(Float)


class ReportDayChange(Base):
    """How often a site's past day changed (0009_revenue_figures): database triggers count every write
    to that day's conversations, orders and ratings, so kept figures of an older count are known stale."""

    __tablename__ = "report_day_changes"

    site_id: Mapped[int] = mapped_column(
        Integer, primary_key=True
    )  # no foreign key: a site's deletion bumps it
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    generation: Mapped[int] = mapped_column(Integer)


class ReportDay(Base):
    """A report's figures for a site's day are kept, as counted at `generation` (reports/kept_days.py)."""

    __tablename__ = "report_days"

    report: Mapped[str] = mapped_column(String(20), primary_key=True)  # sources, csat
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)


class SourceDayFigures(Base):
    """A day's conversations (currency "") or counted orders (per currency) by touch and labels."""

    __tablename__ = "source_day_figures"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    touch: Mapped[str] = mapped_column(String(5), primary_key=True)  # last, first
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    medium: Mapped[str] = mapped_column(String(200), primary_key=True)
    campaign: Mapped[str] = mapped_column(String(200), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    conversations: Mapped[int] = mapped_column(Integer)
    orders: Mapped[int] = mapped_column(Integer)
    revenue_cents: Mapped[int] = mapped_column(Integer)  # net of refunds: whole cents add up exactly
    refunded_cents: Mapped[int] = mapped_column(Integer)


class CsatDayFigures(Base):
    """A day's conversations worth a rating, the ratings and their sum, per channel and operator."""

    __tablename__ = "csat_day_figures"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    channel: Mapped[str] = mapped_column(String(10), primary_key=True)  # call, chat
    operator_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0: none (an operator since deleted)
    asked: Mapped[int] = mapped_column(Integer)
    rated: Mapped[int] = mapped_column(Integer)
    score_sum: Mapped[int] = mapped_column(Integer)


class WebhookDelivery(Base):
    """A platform's webhook delivery already handled, so a redelivery changes nothing (0003_orders)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("site_id", "source", "delivery_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(20))  # shopify, woocommerce
    delivery_id: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime]


class PageView(Base):
    """One page a visitor opened, as the widget reported it (0004_visitors)."""

    __tablename__ = "page_views"
    __table_args__ = (
        UniqueConstraint("site_id", "visitor_token", "view_id"),
        Index("ix_page_views_site_at", "site_id", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    visitor_token: Mapped[str] = mapped_column(String(64))
    view_id: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    page: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    referrer: Mapped[str | None] = mapped_column(Text)
    utm: Mapped[JsonObject | None]
    search: Mapped[str | None] = mapped_column(String(200))
    product_price: Mapped[float | None] = mapped_column(Float)
    currency: Mapped[str | None] = mapped_column(String(3))
    sku: Mapped[str | None] = mapped_column(String(200))
    cart_value: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)


class WebhookSubscription(Base):
    """A URL of the shop's that hears the site's events, signed with its own secret (0006_webhooks)."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(default=list)  # empty: every event, those added later too
    # Kept readable: it is the HMAC key of every delivery (shown to the owner once, rotatable).
    secret: Mapped[str] = mapped_column(String(128))
    allow_private_network: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class OutboundDelivery(Base):
    """One event for one subscription: stored before the first try, retried until 2xx or given up."""

    __tablename__ = "outbound_deliveries"
    __table_args__ = (Index("ix_outbound_deliveries_site_created", "site_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # X-Callserver-Delivery
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), index=True
    )
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(32))  # the body's "id": one per event
    type: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)  # the exact bytes signed and sent on every try
    created_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(20))  # pending, retrying, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime | None] = mapped_column(index=True)  # when the next try is due
    status_code: Mapped[int | None] = mapped_column(Integer)  # of the last try
    response_ms: Mapped[float | None] = mapped_column(Float)  # of the last try
    error: Mapped[str | None] = mapped_column(Text)  # why the last try failed
    finished_at: Mapped[datetime | None]  # delivered, or given up


# The three tables a conversation lives in (reports loop over them alike).
ConversationTable = type[Call] | type[Chat] | type[LeftMessage]

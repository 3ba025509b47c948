"""Configuration from a TOML file and `CALLSERVER_*` environment variables (the environment wins)."""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from callserver.networks import DEFAULT_DENIED_NETWORKS, Network, parse_networks

ENV_PREFIX = "CALLSERVER_"


class ConfigError(Exception):
    """The configuration file or environment holds a value callserver cannot use."""


class IceServer(BaseModel):
    """One STUN or TURN server handed to both browsers and to aiortc."""

    model_config = ConfigDict(frozen=True)

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class Settings(BaseModel):
    """Everything a callserver process needs to know; the defaults run on one machine alone."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8080
    # The address browsers use to reach this server (links in mail, the embed snippet).
    public_url: str = ""
    var_dir: Path = Path("var")
    database_url: str = ""
    # Host-only by default: aiortc would otherwise fall back to Google's public STUN server.
    ice_servers: list[IceServer] = Field(default_factory=list)
    # coturn with `use-auth-secret`: browsers get credentials valid for `turn_ttl` seconds.
    turn_urls: list[str] = Field(default_factory=list)
    turn_secret: str = ""
    turn_ttl: int = 3600
    # "relay": browsers gather TURN relay candidates only (`iceTransportPolicy`), so their audio always
    # passes the TURN server and the shopper's own addresses never appear in an offer; needs a TURN server
    # (`turn_urls` with `turn_secret`, or a `turn:` entry in `ice_servers`). The server's own leg keeps
    # its host candidates: the relay reaches it directly.
    ice_transport_policy: Literal["all", "relay"] = "all"
    # Networks the server's ICE agent never sends checks to, whatever an offer names (loopback,
    # link-local, multicast, IPv4-mapped by default; see media/candidates.py). `[]` allows everything.
    ice_denied_networks: list[str] = Field(default_factory=lambda: list(DEFAULT_DENIED_NETWORKS))
    # "forwarding" relays Opus between the legs below aiortc and records without re-encoding;
    # "transcoding" decodes and re-encodes each leg (the plain aiortc bridge, the benchmark's baseline).
    media_engine: Literal["forwarding", "transcoding"] = "forwarding"
    # Media worker processes for the forwarding engine: calls are spread over them, both legs of a call
    # in one; 0 or 1 keeps the media in the main process. Default: one per core.
    media_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=0)
    # Keep each leg's Ogg/Opus file next to the mixed playback file (otherwise deleted once mixed).
    keep_leg_recordings: bool = False
    ring_timeout: float = 30.0
    # Seconds a call waits for a side whose socket or media went away to come back (`call.resume`,
    # `call.reoffer`) before it ends as `lost` (a ringing call whose shopper is gone: `abandoned`).
    resume_window: float = 30.0
    # Seconds an operator whose softphone went away stays "online" before being taken offline.
    presence_grace: float = 20.0
    # How many chats one operator handles at once; beyond that new chats wait in the queue.
    max_chats: int = Field(5, ge=1)
    session_days: int = 14
    # Behind a reverse proxy: take the shopper's address from X-Forwarded-For (its first entry).
    trust_forwarded_for: bool = False
    secure_cookies: bool = False
    max_frame_bytes: int = 64 * 1024
    # Widget sockets one client address may hold open at once; more are closed with 4429.
    widget_sockets_per_address: int = Field(20, ge=1)
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_tls: bool = False
    mail_from: str = "callserver@localhost"
    # Seconds before a left message's failed mail is tried again; later gaps grow from it (5×, 30×, 2 h
    # at the default 60 s, …) for about a day (chats/left_mail.py).
    mail_retry_after: float = Field(60.0, gt=0)
    # Seconds before a failed webhook delivery is tried again (at most 30, DESIGN); later gaps grow from
    # it (3×, 15×, 30 min at the default 20 s, …) for about a day (webhooks/sender.py).
    webhook_retry_after: float = Field(20.0, gt=0, le=30)
    log_level: str = "INFO"
    # "json": one JSON object per log line, carrying the call or chat id where there is one (logs.py).
    log_format: Literal["text", "json"] = "text"
    # Several nodes (DESIGN, Scale): `redis://HOST:6379/0` makes this process a member of a cluster;
    # empty keeps everything in this process, as one node alone.
    redis_url: str = ""
    # This node's name in the cluster (`callserver nodes`); default: the host's name and the port.
    node_name: str = ""
    # Seconds a draining node (SIGTERM, `callserver nodes drain`) lets calls in progress run on.
    drain_timeout: float = Field(300.0, ge=0)
    # Calls one media worker (or the main process, without workers) takes before new calls get the
    # "all busy" fallback: the forwarder held ~175 calls on a core with p99 ≤ 45 ms here, and past
    # saturation every call on the worker degrades, so the default leaves a third of that as headroom
    # for the tones, RTCP, recording and a neighbour's burst.
    max_calls_per_worker: int = Field(120, ge=1)
    # Bearer token for /metrics; when empty, /metrics answers only on loopback.
    metrics_token: str = ""

    @field_validator("ring_timeout", "presence_grace", "resume_window")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("ice_denied_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # a ValueError names the entry that is not a network
        return value

    @model_validator(mode="after")
    def _relay_needs_turn(self) -> Settings:
        if self.ice_transport_policy == "relay" and not self.has_turn:
            raise ValueError(
                'ice_transport_policy "relay" needs a TURN server: set turn_urls and turn_secret, '
                "or a turn: URL in ice_servers"
            )
        return self

    @property
    def has_turn(self) -> bool:
        """Whether browsers are handed a TURN server (TURN REST credentials or a configured one)."""
        configured = any(url.startswith(("turn:", "turns:")) for s in self.ice_servers for url in s.urls)
        return configured or bool(self.turn_secret and self.turn_urls)

    @property
    def denied_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.ice_denied_networks)

    @property
    def effective_database_url(self) -> str:
        """The configured database, or SQLite in `var_dir`."""
        return self.database_url or f"sqlite+aiosqlite:///{self.var_dir / 'callserver.db'}"

    @property
    def recordings_dir(self) -> Path:
        return self.var_dir / "recordings"

    @property
    def effective_node_name(self) -> str:
        """The configured node name, or this host's name and port."""
        return self.node_name or f"{socket.gethostname()}:{self.port}"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


_JSON_LIKE = {"ice_servers", "turn_urls", "ice_denied_networks"}


def _from_environment(environ: Mapping[str, str]) -> dict[str, object]:
    import json

    values: dict[str, object] = {}
    for name in Settings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if name in _JSON_LIKE:
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} is not valid JSON: {e}") from e
        elif raw.lower() in {"true", "false"} and Settings.model_fields[name].annotation is bool:
            values[name] = raw.lower() == "true"
        else:
            values[name] = raw
    return values


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: object,
) -> Settings:
    """Read `config_file` (TOML), then `CALLSERVER_*` variables, then `overrides`."""
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            values.update(tomllib.loads(config_file.read_text()))
        except OSError as e:
            raise ConfigError(f"Cannot read config file {config_file}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"Config file {config_file} is not valid TOML: {e}") from e
    values.update(_from_environment(os.environ if environ is None else environ))
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as e:
        raise ConfigError(f"Invalid configuration: {e}") from e

"""Operators and owners: accounts, passwords (argon2) and login sessions."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callserver.errors import AlreadyExists, InvalidInput, NotFound
from callserver.store.database import Database
from callserver.store.models import AuthSession, Site, User

ROLES = ("operator", "owner")
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verifying against this keeps a login for an unknown e-mail as slow as one with a wrong password.
    Made on first use, not on import: every command and process that imports this module paid for it."""
    return _hasher.hash("not a real password")


def check_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches `password_hash` (argon2: about a CPU-second by design, so blocking)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    """The argon2 hash of `password`, computed in a thread: on the event loop it stalls every socket."""
    return await asyncio.to_thread(_hasher.hash, password)


@dataclass(frozen=True)
class Account:
    """A logged-in user as the web layer needs it."""

    id: int
    email: str
    name: str
    role: str
    site_ids: tuple[int, ...]  # empty: every site

    @property
    def display_name(self) -> str:
        return self.name or self.email.split("@", 1)[0]

    def works_for(self, site_id: int) -> bool:
        return not self.site_ids or site_id in self.site_ids


def _account(user: User) -> Account:
    return Account(user.id, user.email, user.name, user.role, tuple(s.id for s in user.sites))


async def create_user(
    session: AsyncSession,
    email: str,
    password: str,
    role: str,
    sites: list[Site] | None = None,
    name: str = "",
) -> Account:
    email = email.strip().lower()
    if role not in ROLES:
        raise InvalidInput(f"Role must be one of {', '.join(ROLES)}, not {role!r}.")
    if "@" not in email:
        raise InvalidInput(f"Not an e-mail address: {email!r}.")
    if len(password) < 8:
        raise InvalidInput("The password needs at least 8 characters.")
    user = User(
        email=email,
        name=name,
        password_hash=await hash_password(password),
        role=role,
        created_at=datetime.now(UTC),
        sites=list(sites or []),
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as e:
        raise AlreadyExists(f"A user with the e-mail {email} already exists.") from e
    return _account(user)


async def authenticate(database: Database, email: str, password: str) -> Account | None:
    """The account for these credentials, or None (unknown, disabled or wrong password).

    The password is checked in a thread with no database connection held: a burst of sign-ins
    must neither stall the event loop nor take every pooled connection for a second each.
    """
    email = email.strip().lower()
    async with database.session() as session:
        found = (
            await session.execute(select(User.id, User.password_hash).where(User.email == email))
        ).first()
    stored = found.password_hash if found else await asyncio.to_thread(_dummy_hash)
    if not await asyncio.to_thread(check_password, stored, password) or found is None:
        return None
    async with database.session() as session:
        user = await session.get(User, found.id)
        # Disabled, deleted or given a new password while the hash was being checked: no entry.
        if user is None or user.disabled or user.password_hash != stored:
            return None
        return _account(user)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(session: AsyncSession, account: Account, days: int) -> str:
    """Start a login session; returns the cookie value."""
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    session.add(
        AuthSession(
            token_hash=_hash_token(token),
            user_id=account.id,
            created_at=now,
            expires_at=now + timedelta(days=days),
        )
    )
    return token


async def account_for_session(session: AsyncSession, token: str) -> Account | None:
    row = await session.scalar(
        select(User)
        .join(AuthSession, AuthSession.user_id == User.id)
        .where(AuthSession.token_hash == _hash_token(token), AuthSession.expires_at > datetime.now(UTC))
    )
    if row is None or row.disabled:
        return None
    return _account(row)


async def close_session(session: AsyncSession, token: str) -> None:
    await session.execute(delete(AuthSession).where(AuthSession.token_hash == _hash_token(token)))


async def set_password(session: AsyncSession, user_id: int, password: str) -> None:
    """Give a user a new password and sign them out everywhere (a reset is often after a leak)."""
    if len(password) < 8:
        raise InvalidInput("The password needs at least 8 characters.")
    password_hash = await hash_password(password)
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"No user has the id {user_id}.")
    user.password_hash = password_hash
    await session.execute(delete(AuthSession).where(AuthSession.user_id == user_id))


async def set_disabled(session: AsyncSession, user_id: int, disabled: bool) -> None:
    """Disable (or enable again) a user; a disabled user's sessions end at once."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"No user has the id {user_id}.")
    user.disabled = disabled
    if disabled:
        await session.execute(delete(AuthSession).where(AuthSession.user_id == user_id))

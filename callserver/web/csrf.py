"""CSRF tokens for forms: one per login session for signed-in people, one per browser for sign-in.

A signed-in person's token is derived from the session cookie, so it needs no storage and changes
with each login. The cookie is HttpOnly and random, so another site can neither read nor guess the
token; a keyed hash (not the cookie itself, and not the SHA-256 kept in `auth_sessions`) goes into
the page.

Before signing in there is no session, yet the sign-in form needs protection too ("login CSRF": a
page elsewhere that posts the attacker's credentials makes the victim work inside the attacker's
account). The sign-in page sets a random pre-session cookie and puts its keyed hash into the form
(double submit); a post is accepted only with both, so a page on another site, which can neither
read the cookie nor the form, cannot sign anyone in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

FIELD = "csrf"
_KEY = b"callserver dashboard csrf v1"
_SIGN_IN_KEY = b"callserver sign-in csrf v1"
_SIGN_IN_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")  # what `new_sign_in_secret` makes


def token_for(session_cookie: str) -> str:
    """The CSRF token of the login session behind `session_cookie`."""
    return hmac.new(_KEY, session_cookie.encode(), hashlib.sha256).hexdigest()


def is_valid(session_cookie: str | None, submitted: str | None) -> bool:
    """Whether a submitted form carries this session's token (constant-time comparison)."""
    if not session_cookie or not submitted:
        return False
    return hmac.compare_digest(token_for(session_cookie), submitted)


def new_sign_in_secret() -> str:
    """A fresh value for the pre-session cookie of the sign-in form."""
    return secrets.token_urlsafe(32)


def is_sign_in_secret(value: str | None) -> bool:
    """Whether a cookie holds a value `new_sign_in_secret` could have made (anything else is replaced)."""
    return bool(value) and _SIGN_IN_SECRET.fullmatch(value or "") is not None


def sign_in_token_for(sign_in_secret: str) -> str:
    """The token the sign-in form carries for this pre-session cookie."""
    return hmac.new(_SIGN_IN_KEY, sign_in_secret.encode(), hashlib.sha256).hexdigest()


def is_valid_sign_in(sign_in_secret: str | None, submitted: str | None) -> bool:
    """Whether a posted sign-in form carries the token of this browser's pre-session cookie."""
    if not is_sign_in_secret(sign_in_secret) or not submitted:
        return False
    return hmac.compare_digest(sign_in_token_for(sign_in_secret or ""), submitted)

"""CSRF tokens for the forms of signed-in people: one per login session, checked on every POST.

The token is derived from the session cookie, so it needs no storage and changes with each login.
The cookie is HttpOnly and random, so another site can neither read nor guess the token; a keyed
hash (not the cookie itself, and not the SHA-256 kept in `auth_sessions`) goes into the page.
"""

from __future__ import annotations

import hashlib
import hmac

FIELD = "csrf"
_KEY = b"callserver dashboard csrf v1"


def token_for(session_cookie: str) -> str:
    """The CSRF token of the login session behind `session_cookie`."""
    return hmac.new(_KEY, session_cookie.encode(), hashlib.sha256).hexdigest()


def is_valid(session_cookie: str | None, submitted: str | None) -> bool:
    """Whether a submitted form carries this session's token (constant-time comparison)."""
    if not session_cookie or not submitted:
        return False
    return hmac.compare_digest(token_for(session_cookie), submitted)

"""ICE servers handed to browsers: the configured STUN/TURN servers, plus short-lived TURN credentials.

With `turn_secret` set, every browser gets its own TURN username and password by the TURN REST API
scheme that coturn implements (`use-auth-secret`): the username is `expiry:who`, the password
base64(HMAC-SHA1(secret, username)); nothing long-lived ever reaches a page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from callserver.jsontypes import JsonObject
from callserver.settings import Settings


def ice_servers_for(settings: Settings, who: str, now: float | None = None) -> list[JsonObject]:
    """The ICE servers for one browser (`who` names it in coturn's logs, e.g. `visitor` or `operator-3`)."""
    servers = [s.model_dump(exclude_none=True) for s in settings.ice_servers]
    if settings.turn_secret and settings.turn_urls:
        expires = int(now if now is not None else time.time()) + settings.turn_ttl
        username = f"{expires}:{who}"
        digest = hmac.new(settings.turn_secret.encode(), username.encode(), hashlib.sha1).digest()
        servers.append(
            {
                "urls": list(settings.turn_urls),
                "username": username,
                "credential": base64.b64encode(digest).decode(),
            }
        )
    return servers

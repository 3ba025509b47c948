"""The shopper's country from their IP address, looked up offline (never an online service)."""

from __future__ import annotations

import ipaddress
from typing import Any


class CountryLookup:
    """ISO country codes from geoip2fast's bundled database, loaded on the first public address."""

    def __init__(self) -> None:
        self._database: Any = None

    def country_of(self, address: str | None) -> str | None:
        """`"GB"` for an address in the UK; None for private, loopback or unknown addresses."""
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return None
        if not ip.is_global:
            return None
        if self._database is None:
            from geoip2fast import GeoIP2Fast

            # About 0.2 s, once per process, and only when a shopper from the internet shows up.
            self._database = GeoIP2Fast()
        code = str(self._database.lookup(str(ip)).country_code)
        return code if len(code) == 2 and code.isalpha() else None

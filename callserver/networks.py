"""IP networks as the configuration names them (the ICE network policy: `settings.ice_denied_networks`).

Apart from `media/candidates.py`, which applies the policy, so that the settings can parse it without
importing the media package (which itself reads the settings).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DENIED_NETWORKS: tuple[str, ...] = (
    "0.0.0.0/8",  # "this network"
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "224.0.0.0/4",  # multicast
    "255.255.255.255/32",  # broadcast
    "::/128",  # unspecified
    "::1/128",  # loopback
    "::ffff:0:0/96",  # IPv4-mapped: a way around the IPv4 rules above
    "fe80::/10",  # link-local
    "ff00::/8",  # multicast
)


def parse_networks(networks: Iterable[str]) -> tuple[Network, ...]:
    """The networks of a policy; raises ValueError naming the first entry that is not a network."""
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)

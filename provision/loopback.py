"""Is a host this machine? Requests to it never go through a proxy, and a server there
is one whose install, process and disk this tool can look at."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

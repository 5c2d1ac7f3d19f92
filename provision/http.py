"""One place that builds HTTP clients: explicit timeouts, our User-Agent, proxy rules.

Loopback never goes through HTTP_PROXY/HTTPS_PROXY (a corporate proxy in a user's
environment must not capture requests to their own machine). Other hosts follow the
usual proxy variables, NO_PROXY included, as curl and httpx do.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from provision import __version__

if TYPE_CHECKING:
    import httpx

USER_AGENT = f"ollama-provision/{__version__}"


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `read` is per chunk, not per response: a slow stream is not a timeout."""

    connect: float = 3.0
    read: float = 10.0
    write: float = 10.0
    pool: float = 5.0


def client(
    base_url: str,
    *,
    loopback: bool,
    timeouts: Timeouts = Timeouts(),
    verify: bool = True,
    headers: dict[str, str] | None = None,
) -> httpx.Client:
    import httpx  # lazy: keeps `--help` and argument errors instant

    all_headers = {"User-Agent": USER_AGENT}
    all_headers.update(headers or {})
    tls: ssl.SSLContext | bool = verify
    if base_url.startswith("http://"):
        # Plain HTTP never uses TLS; skip loading the CA bundle (tens of ms on every call).
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(
            connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool
        ),
        headers=all_headers,
        trust_env=not loopback,
        verify=tls,
        follow_redirects=False,
    )


def proxy_for(url: str, environ: dict[str, str]) -> str | None:
    """The proxy a request to `url` would use from this environment, or None."""
    from urllib.request import proxy_bypass_environment

    scheme = url.split("://", 1)[0]
    proxy = None
    for key in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        if environ.get(key):
            proxy = environ[key]
            break
    if not proxy:
        return None
    host = url.split("://", 1)[1].split("/", 1)[0]
    no_proxy = {k.lower(): v for k, v in environ.items() if k.lower() == "no_proxy"}
    if no_proxy and proxy_bypass_environment(host, no_proxy):
        return None
    return proxy


def error_text(response: httpx.Response) -> str:
    """Ollama's error text: `{"error": "..."}`, else the body, else the status line."""
    try:
        return str(response.json().get("error") or response.text)
    except (ValueError, AttributeError):
        return response.text.strip()[:200] or f"HTTP {response.status_code}"

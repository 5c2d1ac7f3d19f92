"""Where the Ollama server is: `--host`, else `OLLAMA_HOST`, else the default.

Reproduces Ollama's own `envconfig.Host()` so that this tool and the `ollama` CLI
always agree on the address, with two deliberate differences a client needs:
listen-all addresses (`0.0.0.0`, `[::]`, empty host) are turned into loopback for
connecting, and an invalid port is an error instead of a silent fallback.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field

from provision.errors import UsageError
from provision.loopback import is_loopback_host
from provision.output import printable

DEFAULT_PORT = 11434
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


@dataclass(frozen=True)
class ServerAddress:
    """A resolved server URL and where it came from (for messages)."""

    url: str  # scheme://host:port[/path], no trailing slash; what we connect to
    scheme: str
    host: str  # hostname or IP, without brackets
    port: int
    path: str
    source: str  # "flag", "env" or "default"
    raw: str  # what the user wrote (after quote/space stripping)
    notes: tuple[str, ...] = field(default=())
    had_credentials: bool = False  # `user:password@` was given (and dropped, never shown)

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def netloc(self) -> str:
        return f"{_bracket(self.host)}:{self.port}"

    def describe_source(self) -> str:
        if self.source == "flag":
            return f"--host {self.raw}"
        if self.source == "env":
            return f"OLLAMA_HOST={self.raw}"
        return "the default address"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _strip(value: str) -> str:
    # Ollama's envconfig.Var trims spaces, then quotes; envconfig.Host trims spaces again
    # (`OLLAMA_HOST='"127.0.0.1:11500 "'` is 127.0.0.1:11500 to it).
    return value.strip().strip("\"'").strip()


# A host name (RFC 1123 labels, and `_` which some internal names use) or an IPv4 address;
# IPv6 literals are checked separately.
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")


def _valid_host(host: str) -> bool:
    if _HOSTNAME.match(host):
        # DNS: labels of 1-63 characters, 253 in all (longer ones fail in IDNA encoding).
        return len(host.rstrip(".")) <= 253 and all(
            len(label) <= 63 for label in host.rstrip(".").split("."))
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort: None when there is no port part."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or end + 1 >= len(hostport) or hostport[end + 1] != ":":
            return None
        return hostport[1:end], hostport[end + 2 :]
    if hostport.count(":") != 1:
        return None  # no port, or a bare IPv6 address
    host, port = hostport.split(":")
    return host, port


def parse_host(value: str, *, source: str = "env") -> ServerAddress:
    """Resolve an OLLAMA_HOST-style value exactly as Ollama does (see module doc).

    Credentials (`user:password@`, a password may hold `/`) are cut off before anything is
    parsed, so no error message can quote them."""
    raw = _strip(value)
    notes: list[str] = []
    default_port = str(DEFAULT_PORT)
    scheme, sep, hostport = raw.partition("://")
    if not sep:
        scheme, hostport = "http", raw
    had_credentials = "@" in hostport
    if had_credentials:
        # Credentials in a URL end up in logs and config files: drop them, never echo them.
        hostport = hostport.rsplit("@", 1)[1]
        raw = f"{scheme}://***@{hostport}" if sep else f"***@{hostport}"
        notes.append("the server address held credentials (user:password@): they are not "
                     "used, shown or written anywhere")
    if sep:
        scheme = scheme.lower()
        if scheme == "http":
            default_port = "80"
        elif scheme == "https":
            default_port = "443"
        else:
            raise UsageError(
                f"{_label(source, raw)}: unsupported scheme '{printable(scheme[:20])}://'",
                hint="use http:// or https://, or just host:port",
            )
    hostport, _, path = hostport.partition("/")
    split = _split_host_port(hostport)
    if split is None:
        host, port = "127.0.0.1", default_port
        bare = hostport.strip("[]")
        if bare:
            try:
                host = str(ipaddress.ip_address(bare))
            except ValueError:
                host = hostport
    else:
        host, port = split
    if not port.isdigit() or len(port) > 5 or not 0 < int(port) <= 65535:
        raise UsageError(
            f"{_label(source, raw)}: invalid port '{printable(port[:20])}'",
            hint=f"Ollama itself would silently use port {default_port} instead; "
            "give a port between 1 and 65535",
        )
    if host and not _valid_host(host):
        raise UsageError(
            f"{_label(source, raw)}: '{printable(host[:80])}' is not a valid host name or IP "
            "address" + (" (a part between dots is longer than 63 characters)"
                         if _HOSTNAME.match(host) else ""),
            hint="write host, host:port, [ipv6]:port or a URL like http://host:port",
        )
    host = _connectable(host, notes, raw)
    path = "/" + path.strip("/") if path.strip("/") else ""
    url = f"{scheme}://{_bracket(host)}:{port}{path}"
    return ServerAddress(
        url=url, scheme=scheme, host=host, port=int(port), path=path,
        source=source, raw=raw, notes=tuple(notes), had_credentials=had_credentials,
    )


def _connectable(host: str, notes: list[str], raw: str) -> str:
    """A listen-all address is where a server binds, not where a client connects."""
    if host in ("", "0.0.0.0"):
        if host:
            notes.append(
                f"'{raw}' is a listen address (all interfaces); connecting to 127.0.0.1. "
                "On another machine, use this server's real address instead."
            )
        return "127.0.0.1"
    if host in ("::", "0:0:0:0:0:0:0:0"):
        notes.append(f"'{raw}' is a listen address (all interfaces); connecting to [::1].")
        return "::1"
    return host


def _label(source: str, raw: str) -> str:
    shown = printable(raw if len(raw) <= 200 else raw[:200] + "...")
    return f"--host {shown}" if source == "flag" else f"OLLAMA_HOST={shown}"


def resolve_host(flag: str | None = None, environ: dict[str, str] | None = None) -> ServerAddress:
    """`--host` flag, else OLLAMA_HOST, else http://127.0.0.1:11434."""
    env = os.environ if environ is None else environ
    if flag is not None and _strip(flag):
        return parse_host(flag, source="flag")
    value = env.get("OLLAMA_HOST", "")
    if _strip(value):
        return parse_host(value, source="env")
    return parse_host("", source="default")

"""Is an Ollama server answering at the address? If not, say exactly why.

One GET of `/` (Ollama answers `Ollama is running`), then `/api/version`. Failures
are classified from the exception chain (refused, DNS, timeout, TLS, proxy) or from
what answered (another web server, a proxy error page), and each gets its own fix.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from provision.host import ServerAddress
from provision.http import (
    Timeouts,
    client,
    deadline,
    is_deadline,
    is_too_large,
    json_body,
    proxy_for,
)
from provision.output import printable
from provision.redact import credentials, in_text

if TYPE_CHECKING:
    import httpx

OLLAMA_BANNER = "Ollama is running"

# Diagnosis kinds: stable identifiers, part of the `--json` schema.
NOT_INSTALLED = "not-installed"
NOT_RUNNING = "not-running"
REFUSED = "connection-refused"  # remote host: nothing listens there
DNS = "dns-failure"
TIMEOUT = "timeout"
NO_ANSWER = "no-answer"  # connected, but no HTTP answer in time
TLS = "tls-error"
PROXY = "proxy-error"
NOT_OLLAMA = "not-ollama"
UNREACHABLE = "network-unreachable"
SERVER_ERROR = "server-error"  # it is Ollama, but an API call it must answer failed


@dataclass(frozen=True)
class Diagnosis:
    kind: str
    message: str  # one line: what is wrong
    fixes: tuple[str, ...] = ()  # what to do, most likely first
    detail: str = ""  # the underlying error text, for the curious

    def to_json(self) -> dict[str, object]:
        """The `diagnosis` object of every command's --json (one shape everywhere)."""
        return {"kind": self.kind, "message": self.message, "fixes": list(self.fixes),
                "detail": self.detail}


@dataclass(frozen=True)
class ProbeResult:
    address: ServerAddress
    version: str | None = None
    diagnosis: Diagnosis | None = None
    elapsed: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def reachable(self) -> bool:
        return self.diagnosis is None


def probe(
    address: ServerAddress,
    *,
    timeouts: Timeouts = Timeouts(connect=3.0, read=5.0, total=10.0),
    environ: dict[str, str] | None = None,
    http: httpx.Client | None = None,
) -> ProbeResult:
    env = dict(os.environ if environ is None else environ)
    started = time.monotonic()
    owned = http is None
    http = http or client(address.url, loopback=address.is_loopback, timeouts=timeouts,
                          environ=env)
    try:
        # One deadline for both requests, also on a client made for longer ones (check's).
        with deadline(timeouts.total, "the first answer"):
            diagnosis, version = _probe(http, address, env)
    finally:
        if owned:
            http.close()
    return ProbeResult(
        address=address, version=version, diagnosis=diagnosis,
        elapsed=time.monotonic() - started, notes=address.notes,
    )


def wait_for_server(
    address: ServerAddress,
    seconds: float,
    *,
    timeouts: Timeouts = Timeouts(connect=2.0, read=5.0, total=10.0),
    environ: dict[str, str] | None = None,
    on_retry: Callable[[ProbeResult, float], None] | None = None,
) -> ProbeResult:
    """Probe until the server is reachable or `seconds` pass (backoff 0.25 s → 2 s)."""
    deadline = time.monotonic() + seconds
    delay = 0.25
    while True:
        result = probe(address, timeouts=timeouts, environ=environ)
        remaining = deadline - time.monotonic()
        if result.reachable or remaining <= 0:
            return result
        if on_retry:
            on_retry(result, remaining)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 2.0)


def _probe(
    http: httpx.Client, address: ServerAddress, env: dict[str, str]
) -> tuple[Diagnosis | None, str | None]:
    import httpx

    proxy = None if address.is_loopback else proxy_for(address.url, env)
    try:
        # /api/version proves it is Ollama and gives the version in one request; `/`
        # (the "Ollama is running" banner) is asked only when that fails, to tell an
        # Ollama behind a path-rewriting proxy from another program on the port.
        version = _version(http)
        if version is not None:
            return None, version
        root = http.get("/")
        if root.status_code == 200 and root.text.strip() == OLLAMA_BANNER:
            return None, None
        return _not_ollama(root, address, proxy), None
    except httpx.ProxyError as exc:
        return _proxy_failure(address, proxy, str(exc)), None
    except httpx.ConnectTimeout as exc:
        return _timeout(address, proxy, exc), None
    except httpx.ConnectError as exc:
        return _connect_failure(address, proxy, exc, env), None
    except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as exc:
        why = str(exc) if is_deadline(exc) else \
            f"sent no answer within {http.timeout.read or 0:g} s"
        return Diagnosis(
            NO_ANSWER,
            f"something accepted the connection at {address.netloc} but {why}"
            if not is_deadline(exc) else why,
            (
                "if Ollama is starting or busy loading a model, try again with --wait 60",
                "otherwise another program holds this port: find it with "
                f"`ss -ltnp 'sport = :{address.port}'` (Linux) or `lsof -i :{address.port}`",
            ),
            detail=type(exc).__name__,
        ), None
    except httpx.DecodingError as exc:  # past a byte budget, or an undecodable body
        return Diagnosis(
            NOT_OLLAMA,
            f"{address.netloc} answers, but not as Ollama does: {exc}",
            (f"another program holds port {address.port}, or a proxy in front of Ollama "
             "rewrites its answers: find it with "
             f"`ss -ltnp 'sport = :{address.port}'` or `lsof -i :{address.port}`",),
            detail="too large" if is_too_large(exc) else type(exc).__name__,
        ), None
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        fixes = [
            f"another program holds port {address.port}: find it with "
            f"`ss -ltnp 'sport = :{address.port}'` or `lsof -i :{address.port}`",
        ]
        if address.scheme == "http":
            fixes.append(f"if the server uses TLS, use https://{address.netloc}{address.path}")
        return Diagnosis(
            NOT_OLLAMA,
            f"something at {address.netloc} answered, but not with HTTP: it is not Ollama",
            tuple(fixes),
            detail=printable(str(exc))[:200],
        ), None


def _version(http: httpx.Client) -> str | None:
    """The version from /api/version, or None when the answer is not Ollama's.

    Connection-level errors propagate: they are what the caller diagnoses.
    """
    response = http.get("/api/version")
    if response.status_code != 200:
        return None
    try:
        body = json_body(response)
    except ValueError:
        return None
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(version, str) or not version.strip():
        return None
    return printable(version.strip()[:64])  # shown in messages: one short line


def _describe_answer(response: httpx.Response) -> str:
    server = printable(response.headers.get("server", "")[:80])
    text = response.text[:2000]
    title = ""
    lower = text.lower()
    if "<title>" in lower:
        start = lower.index("<title>") + len("<title>")
        end = lower.find("</title>", start)
        title = printable(" ".join(text[start:end if end > 0 else start + 80].split()))
    first_line = printable(next((line.strip() for line in text.splitlines() if line.strip()),
                                ""))
    what = f"HTTP {response.status_code}"
    if server:
        what += f", Server: {server}"
    if title:
        what += f', page "{title}"'
    elif first_line:
        what += f', body "{first_line[:80]}"'
    return what


def _not_ollama(
    response: httpx.Response, address: ServerAddress, proxy: str | None
) -> Diagnosis:
    answer = _describe_answer(response)
    if proxy and response.status_code in (403, 407, 502, 503, 504):
        return _proxy_failure(address, proxy, answer)
    if response.status_code == 400 and "https" in response.text.lower():
        return Diagnosis(
            TLS,
            f"the server at {address.netloc} expects HTTPS but was asked over plain HTTP",
            (f"use https://{address.netloc}{address.path}",),
            detail=answer,
        )
    fixes = [
        f"another program holds port {address.port}: find it with "
        f"`ss -ltnp 'sport = :{address.port}'` (Linux) or `lsof -i :{address.port}`",
        "run Ollama on another port (OLLAMA_HOST=127.0.0.1:11435 ollama serve) and point "
        "this tool at it with --host or OLLAMA_HOST",
    ]
    if address.path:
        fixes.insert(0, f"check the path '{address.path}' of the reverse proxy in front of Ollama")
    return Diagnosis(
        NOT_OLLAMA,
        f"{address.netloc} answers, but it is not Ollama ({answer})",
        tuple(fixes),
        detail=answer,
    )


def _proxy_failure(address: ServerAddress, proxy: str | None, detail: str) -> Diagnosis:
    shown = credentials(proxy) if proxy else "the configured proxy"
    return Diagnosis(
        PROXY,
        f"the request to {address.netloc} went through the proxy {shown}, which failed",
        (
            f"exempt the server from the proxy: export NO_PROXY={address.host}",
            "or unset HTTP_PROXY/HTTPS_PROXY for this command",
            "(the proxy that matters for downloads is the one in the Ollama server's own "
            "environment, not this one)",
        ),
        detail=in_text(detail),
    )


def _timeout(address: ServerAddress, proxy: str | None, exc: Exception) -> Diagnosis:
    if proxy:
        return _proxy_failure(address, proxy, f"timed out: {exc}")
    fixes = [
        f"check that {address.host} is the right address and that the machine is up",
        f"a firewall may drop connections to port {address.port}",
        "Ollama listens on 127.0.0.1 only by default: on the server, start it with "
        "OLLAMA_HOST=0.0.0.0 to accept connections from other machines",
    ]
    return Diagnosis(
        TIMEOUT,
        f"no answer from {address.netloc}: the connection timed out",
        tuple(fixes),
        detail=str(exc) or type(exc).__name__,
    )


def _root_cause(exc: BaseException) -> BaseException:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen[-1]


def _connect_failure(
    address: ServerAddress, proxy: str | None, exc: Exception, env: dict[str, str]
) -> Diagnosis:
    cause = _root_cause(exc)
    text = str(cause) or str(exc)
    if proxy:
        return _proxy_failure(address, proxy, text)
    if isinstance(cause, socket.gaierror):
        return Diagnosis(
            DNS,
            f"cannot resolve the host name '{address.host}'",
            (
                f"check the spelling of {address.describe_source()}",
                "if it is a container or VM name, run this where that name resolves",
            ),
            detail=text,
        )
    if isinstance(cause, ssl.SSLError) or "SSL" in text:
        return _tls_failure(address, text)
    if isinstance(cause, ConnectionRefusedError):
        return _refused(address, text, env)
    return Diagnosis(
        UNREACHABLE,
        f"cannot connect to {address.netloc}: {text}",
        (f"check the network route to {address.host} and {address.describe_source()}",),
        detail=text,
    )


def _tls_failure(address: ServerAddress, text: str) -> Diagnosis:
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text.lower():
        return Diagnosis(
            TLS,
            f"{address.netloc} speaks plain HTTP, but the address says https://",
            (f"use http://{address.netloc}{address.path}",),
            detail=text,
        )
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return Diagnosis(
            TLS,
            f"the TLS certificate of {address.host} is not trusted",
            (
                "install the issuing CA into the system store, or point SSL_CERT_FILE at it",
                "check that the certificate's name matches the host name you used",
            ),
            detail=text,
        )
    return Diagnosis(TLS, f"TLS handshake with {address.netloc} failed", (), detail=text)


def _refused(address: ServerAddress, text: str, env: dict[str, str]) -> Diagnosis:
    if not address.is_loopback:
        return Diagnosis(
            REFUSED,
            f"nothing is listening at {address.netloc} (connection refused)",
            (
                f"check that Ollama runs on {address.host} and {address.describe_source()} "
                "names the right port",
                "Ollama listens on 127.0.0.1 only by default: on that machine, start it with "
                "OLLAMA_HOST=0.0.0.0 (for the systemd service: `systemctl edit ollama`, "
                'add Environment="OLLAMA_HOST=0.0.0.0", restart)',
            ),
            detail=text,
        )
    from provision import local_install  # only on this path: keeps `check` imports small

    install = local_install.detect_install(environ=env)
    if install.installed:
        where = install.binary or install.systemd_unit or install.mac_app
        fixes = local_install.start_steps(install)
        if address.port != 11434 or address.path:
            fixes = [f"OLLAMA_HOST={address.netloc} {step}" if step.startswith("ollama serve")
                     else step for step in fixes]
            fixes.append(f"(the server must listen on {address.netloc}, as this tool expects)")
        return Diagnosis(
            NOT_RUNNING,
            f"Ollama is installed ({where}) but not running: nothing listens at "
            f"{address.netloc}",
            tuple(fixes),
            detail=text,
        )
    return Diagnosis(
        NOT_INSTALLED,
        f"Ollama does not seem to be installed, and nothing listens at {address.netloc}",
        tuple(local_install.install_steps(sys.platform)),
        detail=text,
    )

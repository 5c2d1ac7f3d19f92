"""Why an Ollama server does not answer, and what to do: each failure its own fix.

`OllamaServer.probe()` asks `/api/version` (and `/` when that fails); what went wrong is
classified here, from the exception chain (refused, DNS, timeout, TLS, proxy) or from
what answered (another web server, a proxy error page).
"""

from __future__ import annotations

import socket
import ssl
import sys
from collections.abc import Mapping

import httpx

from provision.http import is_deadline, is_too_large
from provision.output import printable
from provision.redact import credentials, in_text
from provision.server.address import ServerAddress
from provision.server.facts import Diagnosis, DiagnosisKind
from provision.server.local_install import detect_install, install_steps, start_steps

OLLAMA_BANNER = "Ollama is running"


def diagnose(exc: Exception, address: ServerAddress, proxy: str | None,
             env: Mapping[str, str], read_timeout: float | None) -> Diagnosis | None:
    """Why a request for the first answer failed, from the exception; None when it is not
    a failure to reach Ollama (the caller lets it propagate)."""
    if isinstance(exc, httpx.ProxyError):
        return _proxy_failure(address, proxy, str(exc))
    if isinstance(exc, httpx.ConnectTimeout):
        return _timeout(address, proxy, exc)
    if isinstance(exc, httpx.ConnectError):
        return _connect_failure(address, proxy, exc, env)
    if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)):
        why = str(exc) if is_deadline(exc) else f"sent no answer within {read_timeout or 0:g} s"
        return Diagnosis(
            DiagnosisKind.NO_ANSWER,
            f"something accepted the connection at {address.netloc} but {why}"
            if not is_deadline(exc) else why,
            (
                "if Ollama is starting or busy loading a model, try again with --wait 60",
                "otherwise another program holds this port: find it with "
                f"`ss -ltnp 'sport = :{address.port}'` (Linux) or `lsof -i :{address.port}`",
            ),
            detail=type(exc).__name__,
        )
    if isinstance(exc, httpx.DecodingError):  # past a byte budget, or an undecodable body
        return Diagnosis(
            DiagnosisKind.NOT_OLLAMA,
            f"{address.netloc} answers, but not as Ollama does: {exc}",
            (f"another program holds port {address.port}, or a proxy in front of Ollama "
             "rewrites its answers: find it with "
             f"`ss -ltnp 'sport = :{address.port}'` or `lsof -i :{address.port}`",),
            detail="too large" if is_too_large(exc) else type(exc).__name__,
        )
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        fixes = [
            f"another program holds port {address.port}: find it with "
            f"`ss -ltnp 'sport = :{address.port}'` or `lsof -i :{address.port}`",
        ]
        if address.scheme == "http":
            fixes.append(f"if the server uses TLS, use https://{address.netloc}{address.path}")
        return Diagnosis(
            DiagnosisKind.NOT_OLLAMA,
            f"something at {address.netloc} answered, but not with HTTP: it is not Ollama",
            tuple(fixes),
            detail=printable(str(exc))[:200],
        )
    return None


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


def not_ollama(
    response: httpx.Response, address: ServerAddress, proxy: str | None
) -> Diagnosis:
    answer = _describe_answer(response)
    if proxy and response.status_code in (403, 407, 502, 503, 504):
        return _proxy_failure(address, proxy, answer)
    if response.status_code == 400 and "https" in response.text.lower():
        return Diagnosis(
            DiagnosisKind.TLS,
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
        DiagnosisKind.NOT_OLLAMA,
        f"{address.netloc} answers, but it is not Ollama ({answer})",
        tuple(fixes),
        detail=answer,
    )


def _proxy_failure(address: ServerAddress, proxy: str | None, detail: str) -> Diagnosis:
    shown = credentials(proxy) if proxy else "the configured proxy"
    return Diagnosis(
        DiagnosisKind.PROXY,
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
        DiagnosisKind.TIMEOUT,
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
    address: ServerAddress, proxy: str | None, exc: Exception, env: Mapping[str, str]
) -> Diagnosis:
    cause = _root_cause(exc)
    text = str(cause) or str(exc)
    if proxy:
        return _proxy_failure(address, proxy, text)
    if isinstance(cause, socket.gaierror):
        return Diagnosis(
            DiagnosisKind.DNS,
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
        DiagnosisKind.UNREACHABLE,
        f"cannot connect to {address.netloc}: {text}",
        (f"check the network route to {address.host} and {address.describe_source()}",),
        detail=text,
    )


def _tls_failure(address: ServerAddress, text: str) -> Diagnosis:
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text.lower():
        return Diagnosis(
            DiagnosisKind.TLS,
            f"{address.netloc} speaks plain HTTP, but the address says https://",
            (f"use http://{address.netloc}{address.path}",),
            detail=text,
        )
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return Diagnosis(
            DiagnosisKind.TLS,
            f"the TLS certificate of {address.host} is not trusted",
            (
                "install the issuing CA into the system store, or point SSL_CERT_FILE at it",
                "check that the certificate's name matches the host name you used",
            ),
            detail=text,
        )
    return Diagnosis(DiagnosisKind.TLS, f"TLS handshake with {address.netloc} failed", (),
                     detail=text)


def _refused(address: ServerAddress, text: str, env: Mapping[str, str]) -> Diagnosis:
    if not address.is_loopback:
        return Diagnosis(
            DiagnosisKind.REFUSED,
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
    install = detect_install(environ=env)
    if install.installed:
        where = install.binary or install.systemd_unit or install.mac_app
        fixes = start_steps(install)
        if address.port != 11434 or address.path:
            fixes = [f"OLLAMA_HOST={address.netloc} {step}" if step.startswith("ollama serve")
                     else step for step in fixes]
            fixes.append(f"(the server must listen on {address.netloc}, as this tool expects)")
        return Diagnosis(
            DiagnosisKind.NOT_RUNNING,
            f"Ollama is installed ({where}) but not running: nothing listens at "
            f"{address.netloc}",
            tuple(fixes),
            detail=text,
        )
    return Diagnosis(
        DiagnosisKind.NOT_INSTALLED,
        f"Ollama does not seem to be installed, and nothing listens at {address.netloc}",
        tuple(install_steps(sys.platform)),
        detail=text,
    )

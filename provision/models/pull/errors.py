"""What went wrong in a pull, in words a person can act on: `PullError` and its kinds.

The server's own text (an `{"error": ...}` line of the stream, or an HTTP error) is
classified here: what a retry can fix (a dropped part, a digest mismatch, a 5xx) and
what it cannot (an unknown model, a full disk, a registry the server cannot reach), each
with its hint.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from provision.names import DEFAULT_HOST, ModelName
from provision.output import human_bytes, printable
from provision.result import Status


class ErrorKind(Status):
    """Why a model failed (stable: part of the `--json` schemas)."""

    UNKNOWN_MODEL = "unknown-model"
    DISK_FULL = "disk-full"
    REGISTRY_UNREACHABLE = "registry-unreachable"
    INVALID_NAME = "invalid-name"
    STALLED = "stalled"
    DROPPED = "connection-dropped"
    INCOMPLETE = "incomplete-stream"
    MAX_RETRIES = "registry-retries-exceeded"
    DIGEST_MISMATCH = "digest-mismatch"
    SERVER_ERROR = "server-error"
    SERVER_UNREACHABLE = "server-unreachable"
    CANCELLED = "interrupted"
    # Provisioning from a bundle (provision.bundle.push):
    CORRUPT_BUNDLE = "corrupt-bundle"  # the bundle's bytes do not match their digests
    SERVER_TOO_OLD = "server-too-old"  # the model says it needs a newer Ollama
    CREATE_FAILED = "create-failed"  # the server could not make a model of the files
    UPLOAD_FAILED = "upload-failed"


@dataclass(frozen=True)
class PullError:
    kind: ErrorKind
    message: str  # one line: what happened
    hint: str | None = None  # what to do
    retryable: bool = False
    detail: str = ""  # the server's own text, when it sent one


_PATH_IN_ERROR = re.compile(r"(?:write|open|create|mkdir|rename)\s+(\S+?):\s")
_REGISTRY_NETWORK = (
    "dial tcp", "no such host", "connection refused", "i/o timeout", "tls handshake",
    "proxyconnect", "x509", "certificate", "network is unreachable", "no route to host",
    "context deadline exceeded", "timeout awaiting response headers",
    "server gave http response to https client", "no location header",
    "first record does not look like a tls handshake",
)
# What a plain-HTTP registry pulled over HTTPS gives: Ollama 0.12 (Go's HTTP client), and
# 0.30+ (its TLS layer, which now sees the HTTP answer first).
_PLAIN_HTTP_REGISTRY = ("server gave http response to https client",
                        "first record does not look like a tls handshake")


def classify_server_error(
    text: str, name: ModelName, *, http_status: int | None = None,
    downloading: bool = False, remaining: int = 0,
) -> PullError:
    """Explain an `{"error": ...}` from the server (in the stream or as an HTTP error)."""
    text = printable(text[:500])
    low = text.lower()
    if http_status == 400:
        return PullError(
            ErrorKind.INVALID_NAME, f"the server rejected the name as invalid (HTTP 400: {text})",
            hint="a model name is [host/][namespace/]model[:tag]", detail=text,
        )
    if "file does not exist" in low or "manifest unknown" in low:
        hint = (f"see the available tags at https://ollama.com/library/{name.model}/tags"
                if name.host.lower() == DEFAULT_HOST and name.namespace == "library"
                else f"check the name against the registry {name.host}")
        return PullError(
            ErrorKind.UNKNOWN_MODEL,
            f"not found in the registry {name.host}: the model name or tag may be wrong",
            hint=hint, detail=text,
        )
    if "no space left on device" in low:
        found = _PATH_IN_ERROR.search(text)
        where = os.path.dirname(found.group(1)) if found else "the server's models directory"
        need = f"at least {human_bytes(remaining)} more is needed" if remaining else \
            "more space is needed"
        return PullError(
            ErrorKind.DISK_FULL, f"the server's disk is full at {where}: {need}",
            hint="free space there, or set OLLAMA_MODELS (in the server's environment) to a "
            "bigger disk and restart the server; re-running resumes the download",
            detail=text,
        )
    if "max retries exceeded" in low:
        return PullError(
            ErrorKind.MAX_RETRIES, "the server gave up downloading a part after its own retries",
            retryable=True, detail=text,
        )
    if "digest mismatch" in low:
        return PullError(
            ErrorKind.DIGEST_MISMATCH, "a downloaded blob was corrupt (digest mismatch)",
            retryable=True, detail=text,
        )
    if any(s in low for s in _REGISTRY_NETWORK):
        return _registry_unreachable(text, low, name, downloading=downloading)
    if http_status is not None and http_status >= 500:
        return PullError(
            ErrorKind.SERVER_ERROR, f"the server answered HTTP {http_status}: {text}",
            retryable=True, detail=text,
        )
    # Anything else: once bytes flow it is most likely transient (the server resumes);
    # before that (the manifest step) retrying the same request will not change it.
    return PullError(
        ErrorKind.SERVER_ERROR, f"the server reported: {text}", retryable=downloading, detail=text,
    )


def _registry_unreachable(text: str, low: str, name: ModelName, *,
                          downloading: bool) -> PullError:
    if any(s in low for s in _PLAIN_HTTP_REGISTRY):
        hint = "the registry speaks plain HTTP: add --insecure"
    elif "no location header" in low:
        hint = ("this Ollama server expects the registry to redirect blob downloads to a "
                "CDN; a plain self-hosted registry does not")
    else:
        hint = ("the download runs on the Ollama server: check that machine's network and "
                "DNS, and if it needs a proxy set HTTPS_PROXY in the server's environment "
                "(e.g. `systemctl edit ollama`); a proxy set here is not used")
    return PullError(
        ErrorKind.REGISTRY_UNREACHABLE,
        f"the Ollama server cannot reach the registry {name.host}",
        hint=hint, retryable=downloading, detail=text,
    )


def cancelled() -> PullError:
    return PullError(
        ErrorKind.CANCELLED, "interrupted: run the same command again to resume where it stopped",
    )

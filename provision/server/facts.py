"""What is known about a server: one `ServerFacts`, whoever asked and however.

`OllamaServer.probe()` finds them (or `--assume` describes them); every stage reads them
instead of asking again. When the server cannot be used, `diagnosis` says why and what
to do (`diagnosis.py` finds it). Pure data: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

from provision.result import Status
from provision.server.address import ServerAddress
from provision.versions import RESPONSES_API_MIN_OLLAMA, at_least


class DiagnosisKind(Status):
    """Why a server cannot be used (stable: part of every `--json` schema)."""

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


# Failures that a server coming up resolves: worth waiting for. "Not installed" is not
# among them by default (a new user without Ollama gets the install steps at once); a
# caller told to wait adds it: a server in a container (`docker run -p 11434:11434
# ollama/ollama`) is not installed here and refuses connections until it has started. A
# wrong name, TLS or a proxy problem do not go away by themselves.
WORTH_WAITING = (DiagnosisKind.NOT_RUNNING, DiagnosisKind.REFUSED, DiagnosisKind.NO_ANSWER,
                 DiagnosisKind.TIMEOUT)


@dataclass(frozen=True)
class Diagnosis:
    kind: DiagnosisKind
    message: str  # one line: what is wrong
    fixes: tuple[str, ...] = ()  # what to do, most likely first
    detail: str = ""  # the underlying error text, for the curious

    def to_json(self) -> dict[str, object]:
        """The `diagnosis` object of every command's --json (one shape everywhere)."""
        return {"kind": self.kind, "message": self.message, "fixes": list(self.fixes),
                "detail": self.detail}


@dataclass(frozen=True)
class ServerFacts:
    address: ServerAddress
    version: str | None = None  # None: unknown (unreachable, or not said)
    diagnosis: Diagnosis | None = None  # why it cannot be used; None: it can
    elapsed: float = 0.0  # seconds the probe took

    @property
    def reachable(self) -> bool:
        return self.diagnosis is None

    @property
    def responses_api(self) -> bool:
        """Does it offer /v1/responses (what current Codex talks)? An unknown version
        (unreachable, a dev build) counts as new enough, as everywhere else."""
        return at_least(self.version, RESPONSES_API_MIN_OLLAMA)

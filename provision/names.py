"""Model names by Ollama's own rules (`types/model/name.go`).

`[host/][namespace/]model[:tag]` with defaults `registry.ollama.ai`, `library`,
`latest`. Two names are the same model when their full forms match
case-insensitively, so `llama3`, `llama3:latest`, `LLAMA3` and
`registry.ollama.ai/library/llama3:latest` are one model.
"""

from __future__ import annotations

from dataclasses import dataclass

from provision.errors import UsageError

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_MAX_LEN = {"host": 350, "namespace": 80, "model": 80, "tag": 80}
# Characters allowed after the first (the first must be a letter, digit or '_').
_EXTRA = {"host": "-_.:", "namespace": "-_", "model": "-_.", "tag": "-_."}


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity for comparison: Ollama compares names case-insensitively."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def short(self) -> str:
        """Ollama's DisplayShortest: how `/api/tags` and `ollama list` show it."""
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    @property
    def repository(self) -> str:
        """`namespace/model`, the registry's repository path."""
        return f"{self.namespace}/{self.model}"

    def same_model(self, other: ModelName) -> bool:
        return self.key == other.key

    def __str__(self) -> str:
        return self.short


def _valid_part(kind: str, part: str) -> bool:
    if not 1 <= len(part) <= _MAX_LEN[kind]:
        return False
    if not (part[0].isascii() and (part[0].isalnum() or part[0] == "_")):
        return False
    extra = _EXTRA[kind]
    return all((c.isascii() and c.isalnum()) or c in extra for c in part[1:])


def parse_name(text: str) -> ModelName:
    """Parse and fill defaults; raise UsageError with the offending part named."""
    raw = text.strip()
    if not raw:
        raise UsageError("empty model name")
    if "@" in raw:
        raise UsageError(
            f"invalid model name '{text}': digest references (@sha256:...) are not supported",
            hint="name the model by its tag, e.g. llama3.2:1b",
        )
    rest = raw
    tag = DEFAULT_TAG
    # The tag follows the last ':' after the last '/' ('/' is not a tag character,
    # so a ':' before it belongs to a host:port).
    if rest.rfind(":") > rest.rfind("/"):
        rest, tag = rest.rsplit(":", 1)
        if not tag:
            raise UsageError(f"invalid model name '{text}': empty tag after ':'")
    parts = rest.split("/")
    if len(parts) == 1:
        host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, parts[0]
    elif len(parts) == 2:
        host, (namespace, model) = DEFAULT_HOST, parts
    else:
        # Ollama cuts the last two parts off; what is left is the host (a scheme allowed).
        *host_parts, namespace, model = parts
        host = "/".join(host_parts)
        if "://" in host:
            host = host.split("://", 1)[1]
    for kind, part in (("host", host), ("namespace", namespace), ("model", model), ("tag", tag)):
        if not _valid_part(kind, part):
            raise UsageError(f"invalid model name '{text}': {_why(kind, part)}")
    return ModelName(host=host, namespace=namespace, model=model, tag=tag)


def _why(kind: str, part: str) -> str:
    if not part:
        return f"the {kind} part is empty"
    if len(part) > _MAX_LEN[kind]:
        return f"the {kind} part is longer than {_MAX_LEN[kind]} characters"
    if not (part[0].isascii() and (part[0].isalnum() or part[0] == "_")):
        return f"the {kind} '{part}' must start with a letter, digit or '_'"
    allowed = " ".join(f"'{c}'" for c in _EXTRA[kind])
    return f"the {kind} '{part}' may contain only letters, digits and {allowed}"


def parse_names(texts: list[str]) -> list[ModelName]:
    """Parse several names, dropping duplicates (by Ollama's rules), keeping order."""
    seen: set[tuple[str, str, str, str]] = set()
    names: list[ModelName] = []
    for text in texts:
        name = parse_name(text)
        if name.key not in seen:
            seen.add(name.key)
            names.append(name)
    return names

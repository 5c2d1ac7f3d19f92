"""Model names as the Ollama server reads them: the double's own copy of the rules.

Ollama's `types/model/name.go` (`ParseName`, `IsValid`, `DisplayShortest`, `EqualFold`):
`[host/][namespace/]model[:tag]`, the defaults `registry.ollama.ai`, `library`, `latest`.
The tag follows the last `:` when it comes after the last `/` (a `:` before it belongs to
a `host:port`); the model and the namespace are the last two `/`-parts, the host all
that is left, less an `http://`-like scheme. Each part is 1..80 bytes (the host 1..350)
of ASCII letters, digits and `_`, starting with one of those, then also `-`; `.` except
in the namespace; `:` only in the host. Nothing is trimmed and nothing else is allowed
(`@digest` included: the server calls such a name invalid). Two names are one model
when all four parts are equal case-insensitively.

This module deliberately does not use the parser of the code under test: were that one
wrong, a double that shares it would agree with it and the tests would not notice.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_MAX_LEN = {"host": 350, "namespace": 80, "model": 80, "tag": 80}
_ALNUM_ = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class InvalidName(ValueError):
    """Not a valid model name by Ollama's rules (the server answers `invalid model name`)."""


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What two spellings of one model share (`EqualFold`)."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    @property
    def full(self) -> str:
        """`host/namespace/model:tag` (`String` of a merged name)."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def short(self) -> str:
        """`DisplayShortest`: what `/api/tags` and `ollama list` show."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"


def _cut_last(text: str, sep: str) -> tuple[str, str, bool]:
    """name.go's `cutPromised`: cut at the last `sep`; an empty side is a missing part."""
    before, found, after = text.rpartition(sep)
    if not found:
        return text, "", False
    return before or "!MISSING!", after or "!MISSING!", True


def _valid_part(kind: str, part: str) -> bool:
    """name.go's `isValidPart`, byte by byte (so any non-ASCII character is invalid)."""
    if not 1 <= len(part.encode()) <= _MAX_LEN[kind]:
        return False
    if part[0] not in _ALNUM_:
        return False
    for char in part[1:]:
        if char in _ALNUM_ or char in "-_":
            continue
        if char == "." and kind != "namespace":
            continue
        if char == ":" and kind == "host":
            continue
        return False
    return True


def parse_name(text: str) -> ModelName:
    """`ParseName` then `IsValid`: the four parts with defaults filled in, or InvalidName."""
    rest, host, namespace, tag = text, "", "", ""
    if rest.rfind(":") > rest.rfind("/"):
        rest, tag, _ = _cut_last(rest, ":")
    rest, model, promised = _cut_last(rest, "/")
    if not promised:
        model = rest
    else:
        rest, namespace, promised = _cut_last(rest, "/")
        if not promised:
            namespace = rest
        else:
            scheme, found, after = rest.partition("://")
            host = after if found else scheme
    name = ModelName(host=host or DEFAULT_HOST, namespace=namespace or DEFAULT_NAMESPACE,
                     model=model, tag=tag or DEFAULT_TAG)
    for kind in ("host", "namespace", "model", "tag"):
        if not _valid_part(kind, getattr(name, kind)):
            raise InvalidName(f"invalid model name {text!r}: bad {kind}")
    return name

"""What every command ends with: one typed result, one JSON envelope.

Every `--json` document has the same head, then the command's own fields:

    {"schema": "ollama-provision.<command>/1", "ready": true, "exit_code": 0, ...}

`ready` is `exit_code == 0`: a script branches on one key, whatever the command.
`CommandResult` is that document before it is printed (`Output.emit_result` prints it);
the commands' text renderers read the same fields. `Status` is the base of every status
value the documents carry (pull outcomes, steps, hosts...): a `str`, so it is written to
JSON and compared as its text, and typed, so a misspelt status is an attribute error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from provision.errors import EXIT_OK

SCHEMA_PREFIX = "ollama-provision."


class Status(str, Enum):
    """A status value: its text in JSON, in messages and in comparisons."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


@dataclass(frozen=True)
class CommandResult:
    """One command's outcome as its `--json` document: the envelope, then `fields`."""

    command: str  # "check", "pull-plan", "bundle-push"...
    exit_code: int
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.exit_code == EXIT_OK

    @property
    def schema(self) -> str:
        return f"{SCHEMA_PREFIX}{self.command}/1"

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.schema, "ready": self.ready, "exit_code": self.exit_code,
                **self.fields}

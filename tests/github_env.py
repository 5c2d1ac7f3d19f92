"""$GITHUB_ENV read back the way the GitHub Actions runner reads it."""

from __future__ import annotations


def github_env_vars(text: str) -> dict[str, str]:
    """$GITHUB_ENV as the runner reads it: NAME=value, or NAME<<DELIMITER ... DELIMITER."""
    found: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value = []
            for part in lines:
                if part == delimiter:
                    break
                value.append(part)
            found[name] = "\n".join(value)
        elif "=" in line:
            name, value = line.split("=", 1)
            found[name] = value
    return found

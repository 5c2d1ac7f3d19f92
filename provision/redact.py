"""Secrets never shown: credentials in URLs, and values that look like tokens.

Every message that may quote a URL, an address or a proxy setting goes through
`credentials()` *before* it is formatted, so that a parse error cannot echo a password
(`http://admin:S3cret/Pw@host` must not become "invalid port 'S3cret'").
"""

from __future__ import annotations

import re

# Prefixes of well-known token formats: GitHub, Hugging Face, OpenAI, Anthropic, Slack,
# GitLab, AWS access keys, Google API keys, Stripe, npm, JWTs.
TOKEN_PREFIXES = (
    "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "hf_", "sk-", "sk_", "pk_",
    "xoxb-", "xoxp-", "xoxa-", "glpat-", "akia", "asia", "aiza", "rk_live_", "npm_", "eyj",
)


def credentials(text: str) -> str:
    """`text` with any `user:password@` before a host replaced by `***@`, scheme or not.

    The userinfo is everything before the last `@` of the address part, `/` included
    (people paste passwords with slashes), so nothing of it survives.
    """
    if "@" not in text:
        return text
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    before_space, space, after = rest.partition(" ")
    if "@" not in before_space:
        return text
    hidden = "***@" + before_space.rsplit("@", 1)[1] + space + after
    return f"{scheme}://{hidden}" if sep else hidden


def in_text(text: str) -> str:
    """Credentials anywhere in a longer text (an error message quoting a URL)."""
    text = re.sub(r"(?i)\b(bearer|basic)\s+[^\s\"',]+", r"\1 ***", text)
    return re.sub(r"(\w+://)[^\s\"'<>@]+@", r"\1***@", text)


def looks_like_secret(value: str) -> bool:
    """A token or key rather than a variable NAME: a known token prefix followed by a
    long tail, or a long word mixing letters and digits (or upper and lower case), which
    names (`OLLAMA_API_KEY`, `HF_TOKEN`) do not have and keys do."""
    low = value.lower()
    if any(low.startswith(p) and len(value) - len(p) >= 16 for p in TOKEN_PREFIXES):
        return True
    for word in re.split(r"[_.\-]+", value):
        letters = any(c.isalpha() for c in word)
        if len(word) >= 16 and letters and any(c.isdigit() for c in word):
            return True
        if len(word) >= 20 and any(c.islower() for c in word) and \
                any(c.isupper() for c in word):
            return True
    return False

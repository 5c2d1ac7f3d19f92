"""A corpus of real-world configs: after `config`, everything outside the tool's keys is
what it was, byte for byte (only migrations of old setups change other lines, and only
the lines they must)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.config_support import (
    CORPUS,
    config_json,
    corpus_text,
    home_with,
    load,
    removed_lines,
    without,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

VALID = sorted(p.name for p in CORPUS.glob("*.toml") if p.name != "invalid.toml")
RELEASES = ("0.169.0", "0.130.0", "0.58.0")
PROVIDER_KEYS = ("name", "base_url", "wire_api")
PROFILE_KEYS = ("model", "model_provider")

# Lines of the corpus that may change or go, per release (nothing else may): migrations
# of old setups for current releases, the tool's own keys of [profiles.ollama] before 0.134.
MAY_CHANGE = {
    ("old_ollama_provider.toml", "modern"): {
        'model_provider = "ollama"', "[model_providers.ollama]", 'wire_api = "chat"'},
    ("old_ollama_local.toml", "modern"): {
        "[model_providers.ollama]", 'name = "Ollama"', 'base_url = "http://localhost:11434/v1"',
        'wire_api = "chat"', ""},
    ("profiles.toml", "0.169.0"): {
        "[profiles.ollama]   # an older run of some tool", 'model = "mistral"',
        'model_provider = "ollama"', 'model_reasoning_effort = "medium"', ""},
    ("profiles.toml", "0.130.0"): {'model = "mistral"', 'model_provider = "ollama"'},
    ("profiles.toml", "0.58.0"): {'model = "mistral"', 'model_provider = "ollama"'},
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("OLLAMA_HOST", "CODEX_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))


def _old_data_after_migration(name: str, release: str, data: dict[str, Any]) -> dict[str, Any]:
    """What the user's own settings must be afterwards: the old data, migrated."""
    data = json.loads(json.dumps(data))  # a deep copy (corpus values are all JSON types)
    modern = release != "0.58.0"
    if name == "old_ollama_provider.toml" and modern:
        table = data["model_providers"].pop("ollama")
        table["wire_api"] = "responses"  # both releases refuse chat
        data["model_providers"]["ollama-gpu1-lan"] = table
        data["model_provider"] = "ollama-gpu1-lan"
    if name == "old_ollama_local.toml" and modern:
        del data["model_providers"]
    if name == "profiles.toml" and release == "0.169.0":
        del data["profiles"]["ollama"]  # moved to ollama.config.toml
    return data


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("name", VALID)
def test_everything_outside_the_tools_keys_is_kept(capsys, make_ollama, tmp_path, name,
                                                   release) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    home = home_with(tmp_path, name)
    old_text = corpus_text(name).decode()
    code, doc = config_json(capsys, "--host", srv.url, "--codex-home", str(home),
                            "--no-validate", "--codex-version", release, "llama3.2:1b")
    assert code == 0, doc
    new_text = (home / "config.toml").read_bytes().decode()
    provider = doc["provider_id"]
    tool_keys = [("model_providers", provider, k) for k in PROVIDER_KEYS]
    if doc["profile_style"] == "table":
        tool_keys += [("profiles", "ollama", k) for k in PROFILE_KEYS]
    expected = _old_data_after_migration(name, release, tomllib.loads(old_text))
    assert without(tomllib.loads(new_text), *tool_keys) == without(expected, *tool_keys)

    era = "modern" if release != "0.58.0" else release
    allowed = MAY_CHANGE.get((name, release), MAY_CHANGE.get((name, era), set()))
    gone = removed_lines(old_text, new_text)
    assert set(gone) <= allowed, f"lines lost: {set(gone) - allowed}"

    if "\r\n" in old_text:
        assert new_text.count("\n") == new_text.count("\r\n")
    # Idempotent on every corpus file and release.
    code, again = config_json(capsys, "--host", srv.url, "--codex-home", str(home),
                              "--no-validate", "--codex-version", release, "llama3.2:1b")
    assert [f["status"] for f in again["files"]] == ["unchanged"] * len(again["files"])


def test_legacy_profile_moves_to_its_file_with_the_users_keys(capsys, make_ollama,
                                                              tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path, "profiles.toml")
    code, doc = config_json(capsys, "--host", srv.url, "--codex-home", str(home),
                            "--no-validate", "--codex-version", "0.169.0", "llama3.2:1b")
    assert load(home / "ollama.config.toml") == {
        "model_reasoning_effort": "medium", "model": "llama3.2:1b",
        "model_provider": doc["provider_id"]}
    assert "fast" in load(home / "config.toml")["profiles"]
    assert any("[profiles.ollama]" in m for m in doc["migrations"])


def test_old_ollama_table_is_migrated_with_its_keys_and_references(capsys, make_ollama,
                                                                   tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path, "old_ollama_provider.toml")
    code, doc = config_json(capsys, "--host", srv.url, "--codex-home", str(home),
                            "--no-validate", "llama3.2:1b")
    data = load(home / "config.toml")
    assert "ollama" not in data["model_providers"]
    assert data["model_providers"]["ollama-gpu1-lan"] == {
        "name": "Ollama", "base_url": "http://gpu1.lan:11434/v1", "wire_api": "responses",
        "request_max_retries": 4, "stream_idle_timeout_ms": 600000}
    assert data["model_provider"] == "ollama-gpu1-lan"
    text = (home / "config.toml").read_text()
    assert "# my Ollama box\n" in text and "request_max_retries = 4     # flaky wifi\n" in text
    backup = Path(doc["files"][0]["backup"])
    assert backup.read_bytes() == corpus_text("old_ollama_provider.toml")
    assert doc["migrations"] and "ollama-gpu1-lan" in doc["migrations"][0]


def test_old_ollama_table_on_codex_0_58_naming_another_server_is_left_alone(
        capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path, "old_ollama_provider.toml")
    code, doc = config_json(capsys, "--host", srv.url, "--codex-home", str(home),
                            "--no-validate", "--codex-version", "0.58.0", "llama3.2:1b")
    data = load(home / "config.toml")
    assert data["model_providers"]["ollama"]["base_url"] == "http://gpu1.lan:11434/v1"
    assert doc["provider_id"] == f"ollama-127-0-0-1-{srv.port}"
    assert data["profiles"]["ollama"]["model_provider"] == doc["provider_id"]


def test_old_local_ollama_table_is_just_removed(capsys, make_ollama, tmp_path) -> None:
    srv = make_ollama()
    home = home_with(tmp_path, "old_ollama_local.toml")
    code, doc = config_json(capsys, "--host", srv.url, "--codex-home", str(home),
                            "--no-validate", "llama3.2:1b")
    data = load(home / "config.toml")
    # `model_provider = "ollama"` now means the built-in, at the very address it named.
    assert data["model_provider"] == "ollama" and "ollama" not in data["model_providers"]

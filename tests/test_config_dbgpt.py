"""`config --client dbgpt`: DB-GPT's TOML edited like Codex's config: only this tool's
entries change, every other byte stays; atomic, backed up, locked; --dry-run shows a diff.

DB-GPT's own loader reading the result, and its Ollama proxy answering through it:
tests/integration/test_real_clients.py.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from provision.cli import main
from provision.toml_edit import SetArrayEntry, edit_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

USERS = """\
# DB-GPT configuration (mine)
[system]
language = "${env:DBGPT_LANG:-en}"
encrypt_key = "your_secret_key"

# Model Configurations
[models]
[[models.llms]]
name = "deepseek-chat"   # the cloud one
provider = "proxy/deepseek"
api_key = "${env:DEEPSEEK_API_KEY}"

[[models.llms]]
name = "tiny"
provider = "proxy/ollama"
api_base = "http://localhost:11434"  # the old laptop server
context_length = 2048

[[models.embeddings]]
name = "BAAI/bge-large-zh-v1.5"
provider = "hf"
# path = "/data/models/bge-large-zh-v1.5"

[rag]
chunk_size = 1000
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["config", "--client", "dbgpt", "--host", "127.0.0.1:11500", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def entries(path: Path, table: str) -> list[dict[str, object]]:
    return tomllib.loads(path.read_text())["models"][table]


def test_existing_entry_updated_and_embedding_added_every_other_byte_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dbgpt.toml"
    path.write_text(USERS)
    code, out, _ = run(capsys, "tiny:latest", "--embedding-model", "nomic-embed-text",
                       "--output", str(path))
    assert code == 0
    text = path.read_text()
    # The one changed line is the value of this tool's key in this tool's entry.
    old = USERS.replace('api_base = "http://localhost:11434"',
                        'api_base = "http://127.0.0.1:11500"')
    embedding = ('[[models.embeddings]]\nname = "nomic-embed-text"\nprovider = "proxy/ollama"\n'
                 'api_url = "http://127.0.0.1:11500"\n\n')
    cut = old.index("[rag]")
    assert text == old[:cut] + embedding + old[cut:]
    assert entries(path, "llms")[1]["context_length"] == 2048  # the user's key, kept
    backups = list(tmp_path.glob("dbgpt.toml.bak-*"))
    assert [b.read_text() for b in backups] == [USERS]
    assert f"changed: {path} (backup: {backups[0]})" in out
    # Idempotent: nothing to do, no new backup, the file untouched.
    mtime = path.stat().st_mtime_ns
    code, out, _ = run(capsys, "tiny", "--embedding-model", "nomic-embed-text:latest",
                       "--output", str(path))
    assert code == 0 and f"unchanged: {path}" in out
    assert path.stat().st_mtime_ns == mtime and len(list(tmp_path.glob("*.bak-*"))) == 1


def test_a_new_model_gets_its_own_entry_after_the_others(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dbgpt.toml"
    path.write_text(USERS)
    code, _, err = run(capsys, "qwen2.5:7b", "--output", str(path))
    assert code == 0
    llms = entries(path, "llms")
    assert [e["name"] for e in llms] == ["deepseek-chat", "tiny", "qwen2.5:7b"]
    assert llms[2] == {"name": "qwen2.5:7b", "provider": "proxy/ollama",
                       "api_base": "http://127.0.0.1:11500"}
    assert llms[1]["api_base"] == "http://localhost:11434"  # another model: left alone
    text = path.read_text()
    cut = USERS.index("[[models.embeddings]]")
    assert text.startswith(USERS[:cut]) and text.endswith(USERS[cut:])
    assert "warning: DB-GPT's default chat model is deepseek-chat (the first " \
        "[[models.llms]] entry), not qwen2.5:7b" in err


def test_set_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dbgpt.toml"
    path.write_text(USERS)
    code, _, err = run(capsys, "tiny", "--set-default", "--output", str(path))
    assert code == 0 and "warning" not in err
    data = tomllib.loads(path.read_text())["models"]
    assert data["default_llm"] == "tiny" and "default_embedding" not in data


def test_a_standalone_file_is_created_private(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "new" / "dbgpt-ollama.toml"
    code, out, _ = run(capsys, "tiny", "--output", str(path))
    assert code == 0 and f"created: {path}" in out
    assert path.read_text() == ('[[models.llms]]\nname = "tiny"\nprovider = "proxy/ollama"\n'
                                'api_base = "http://127.0.0.1:11500"\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"use it: dbgpt start webserver --config {path}" in out


def test_dry_run_shows_the_diff_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dbgpt.toml"
    users = USERS.replace("context_length = 2048", 'context_length = 2048\napi_key = "sk-live-123"')
    path.write_text(users)
    code, out, _ = run(capsys, "tiny", "--dry-run", "--output", str(path))
    assert code == 0
    assert '-api_base = "http://localhost:11434"  # the old laptop server' in out
    assert '+api_base = "http://127.0.0.1:11500"  # the old laptop server' in out
    assert ' api_key = "***"' in out and "sk-live-123" not in out  # context, redacted
    assert f"would-change: {path}" in out
    assert path.read_text() == users and not list(tmp_path.glob("*.bak-*"))


def test_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dbgpt.toml"
    code, out, _ = run(capsys, "tiny", "--embedding-model", "e", "--json", "--output",
                       str(path))
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "ollama-provision.config-client/1"
    assert doc["client"] == "dbgpt" and doc["changed"] is True
    assert doc["models"] == {"chat": "tiny", "embedding": "e"}
    assert doc["files"][0]["status"] == "created"


@pytest.mark.parametrize(("args", "message"), [
    (("tiny",), "error: DB-GPT reads the config file named by `dbgpt start webserver"),
    (("--output", "x.toml"), "error: name the chat model for DB-GPT"),
    (("bad name", "--output", "x.toml"), "invalid model name"),
    (("tiny", "--output", "x.toml", "--profile", "p"), "error: --profile is for --client "
     "codex, not dbgpt"),
    (("tiny", "--output", "x.toml", "--codex-home", "h"), "error: --codex-home is for"),
])
def test_bad_flags_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch,
                                       args: tuple[str, ...], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert message in err.splitlines()[0]
    assert not (tmp_path / "x.toml").exists()


def test_unknown_client_and_embedding_model_for_codex(capsys) -> None:
    assert main(["config", "--client", "langchain"]) == 2
    assert "no config client 'langchain'; known: codex, dbgpt" in capsys.readouterr().err
    assert main(["config", "--embedding-model", "e"]) == 2
    assert "--embedding-model is not for --client codex" in capsys.readouterr().err


def test_invalid_or_read_only_file_is_left_as_it_was(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dbgpt.toml"
    path.write_text("[models\nname = 1\n")
    code, _, err = run(capsys, "tiny", "--output", str(path))
    assert code == 2 and "invalid TOML at line 1" in err
    assert path.read_text() == "[models\nname = 1\n"
    path.write_text(USERS)
    path.chmod(0o444)
    code, _, err = run(capsys, "qwen", "--output", str(path))
    assert code == 2 and "is read-only: not changing it" in err
    assert path.read_text() == USERS and not list(tmp_path.glob("*.bak-*"))
    path.chmod(0o644)
    path.write_text("models = 3\n")
    code, _, err = run(capsys, "qwen", "--output", str(path))
    assert code == 2 and "'models.llms' is not in a table in this file" in err


# --- the array-of-tables edit itself -------------------------------------------------------


def test_inline_array_gets_an_inline_table() -> None:
    text = '[models]\nllms = [{ name = "a", provider = "x" }]  # mine\n'
    op = SetArrayEntry.of(("models", "llms"), {"name": "b"}, {"api_base": "u"})
    new = edit_text(text, [op])
    assert tomllib.loads(new)["models"]["llms"] == [{"name": "a", "provider": "x"},
                                                    {"name": "b", "api_base": "u"}]
    assert new.endswith("  # mine\n")


def test_entries_without_blank_lines_and_crlf_are_kept() -> None:
    text = '[[models.llms]]\r\nname = "a"\r\n[[models.embeddings]]\r\nname = "e"\r\n'
    op = SetArrayEntry.of(("models", "llms"), {"name": "b"}, {"api_base": "u"})
    new = edit_text(text, [op])
    assert new == ('[[models.llms]]\r\nname = "a"\r\n\r\n[[models.llms]]\r\nname = "b"\r\n'
                   'api_base = "u"\r\n\r\n[[models.embeddings]]\r\nname = "e"\r\n')
    assert edit_text(new, [op]) == new

"""The apply manifest: shipped configs load; bad ones say file, key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.apply.manifest import load_manifest, parse_manifest
from provision.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent


def test_builtin_default_is_the_configs_default() -> None:
    shipped = (ROOT / "provision" / "data" / "default.toml").read_text()
    assert (ROOT / "configs" / "default.toml").read_text() == shipped
    manifest = load_manifest(None)
    assert manifest.source == "built-in default.toml"
    (model,) = manifest.models
    assert model.choose and model.choose[0] == "qwen2.5-coder:32b"
    assert manifest.codex.profile == "ollama" and manifest.codex.set_default is False


@pytest.mark.parametrize("name", ["ci.toml", "workstation.toml"])
def test_example_configs_load(name: str) -> None:
    manifest = load_manifest(str(ROOT / "configs" / name))
    assert manifest.models


def test_workstation_custom_model() -> None:
    manifest = load_manifest(str(ROOT / "configs" / "workstation.toml"))
    reviewer = next(m for m in manifest.models if m.name == "reviewer")
    assert reviewer.is_custom and reviewer.base == "qwen2.5-coder:14b"
    assert reviewer.parameters["temperature"] == 0.2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nhots = 'x'\n", "m.toml: server.hots: unknown key (did you mean 'host'?)"),
        ("[sever]\n", "m.toml: sever: unknown section (did you mean 'server'?)"),
        ("[server]\nwait = 'soon'\n", "m.toml: server.wait: expected seconds"),
        ("[[models]]\nname = 'a'\nnum_ctx = 10\n", "m.toml: models[0].num_ctx: expected an "
         "integer >= 256"),
        ("[[models]]\nnum_ctx = 4096\n", "m.toml: models[0]: give exactly one of 'name'"),
        ("[[models]]\nname = 'a'\nchoose = ['b']\n", "give exactly one of 'name'"),
        ("[[models]]\nname = 'llama 3'\n", "m.toml: models[0].name: invalid model name"),
        ("[[models]]\nchoose = ['ok', 'bad name']\n", "models[0].choose[1]: invalid model name"),
        ("[[models]]\nname = 'a'\nsystem = 'x'\n", "only a custom model (with 'from')"),
        ("[[models]]\nname = 'a'\nrequired = 'yes'\n", "models[0].required: expected true or "
         "false, got 'yes'"),
        ("[pull]\nparallel = 0\n", "pull.parallel: expected an integer >= 1"),
        ("models = 3\n", "m.toml: models: expected [[models]] tables"),
        ("[server]\nhost = \n", "m.toml: invalid TOML"),
        ("[[models]]\nname = 'a'\n[[models]]\nname = 'a'\nfrom = 'b'\n", "declared both"),
    ],
)
def test_schema_errors_name_file_key_and_expectation(text: str, expected: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_manifest(text, "m.toml")
    assert expected in info.value.message


def test_invalid_toml_reports_line_and_column() -> None:
    with pytest.raises(UsageError, match=r"line 2, column"):
        parse_manifest("[server]\nhost = \n", "m.toml")


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_manifest(str(tmp_path / "nope.toml"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pull]\nstall_timeout = 0\n", "pull.stall_timeout: expected seconds (a number > 0)"),
        ("[server]\nconnect_timeout = 0\n", "server.connect_timeout: expected seconds"),
        ("[server]\nhost = 'host:1:2'\n", "server.host: 'host:1:2' is not a valid host"),
        ("[codex]\nprofile = '../evil'\n", "codex.profile: profile '../evil' must be a plain"),
        ("[codex]\nmodel = 'not valid!'\n", "codex.model: invalid model name"),
    ],
)
def test_values_that_would_break_the_run_are_refused_at_load(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_manifest(text, "m.toml")
    assert message in info.value.message


# --- [clients] ---------------------------------------------------------------------------


def test_clients_table() -> None:
    manifest = parse_manifest("""
[clients]
dbgpt = { path = "~/DB-GPT/configs/dbgpt-ollama.toml", embedding_model = "nomic-embed-text" }
env = { for = ["openai", "g4f", "openai"] }
""", "m.toml")
    assert manifest.codex.enabled  # [clients] without codex: Codex as before
    ((name, options),) = manifest.clients.configs
    assert name == "dbgpt" and options.path.endswith("dbgpt-ollama.toml")
    assert options.embedding_model == "nomic-embed-text" and options.model is None
    env = manifest.clients.env
    assert env.clients == ("openai", "g4f") and env.format == "github" and env.file is None
    with_file = parse_manifest("[clients]\nenv = { file = 'o.env' }\n", "m.toml")
    assert with_file.clients.env.format == "dotenv"
    assert parse_manifest("[clients]\nenv = true\n", "m.toml").clients.env.clients == ()


def test_clients_codex_agrees_with_codex_table() -> None:
    assert not parse_manifest("[clients]\ncodex = false\n", "m.toml").codex.enabled
    table = parse_manifest("[clients.codex]\nprofile = 'local'\n", "m.toml").codex
    assert table.enabled and table.profile == "local"
    kept = parse_manifest("[codex]\nprofile = 'p'\n[clients]\ncodex = true\n", "m.toml").codex
    assert kept.profile == "p" and kept.enabled
    assert parse_manifest("", "m.toml").clients.configs == ()


@pytest.mark.parametrize(("text", "expected"), [
    ("[clients]\ndbgtp = true\n", "m.toml: clients.dbgtp: unknown client (did you mean "
     "'dbgpt'?)"),
    ("[clients]\ndbgpt = true\n", "m.toml: clients.dbgpt: needs `path`"),
    ("[clients]\ndbgpt = { path = 'x', modle = 'a' }\n", "m.toml: clients.dbgpt.modle: "
     "unknown key (did you mean 'model'?)"),
    ("[clients]\ndbgpt = { path = 'x', model = 'bad name' }\n", "clients.dbgpt.model: "
     "invalid model name"),
    ("[clients]\ndbgpt = 'yes'\n", "clients.dbgpt: expected true, false or a table"),
    ("[clients]\nenv = { for = ['langchain'] }\n", "clients.env.for[0]: unknown client "
     "'langchain'"),
    ("[clients]\nenv = { format = 'sh' }\n", "clients.env: format 'sh' needs a `file`"),
    ("[clients]\nenv = { format = 'xml' }\n", "clients.env.format: expected one of sh, "
     "dotenv, json, github"),
    ("[clients.codex]\nprofil = 'x'\n", "clients.codex.profil: unknown key"),
    ("[codex]\nprofile = 'a'\n[clients.codex]\nprofile = 'b'\n", "clients.codex: Codex's "
     "options are in [codex] too"),
    ("[codex]\nenabled = false\n[clients]\ncodex = true\n", "clients.codex: is true but "
     "[codex] enabled is false"),
    ("clients = 1\n", "m.toml: clients: expected a table"),
])
def test_clients_errors_name_the_key(text: str, expected: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_manifest(text, "m.toml")
    assert expected in info.value.message


def test_a_bundle_is_found_beside_the_manifest(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    path = tmp_path / "m.toml"
    path.write_text('[[models]]\nname = "tiny"\n[pull]\nbundle = "models.tar"\n')
    assert load_manifest(str(path)).pull.bundle == str(tmp_path / "models.tar")
    path.write_text('[[models]]\nname = "tiny"\n[pull]\nbundle = "~/m.tar"\n')
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_manifest(str(path)).pull.bundle == str(tmp_path / "home" / "m.tar")
    with pytest.raises(UsageError, match=r"pull.bundle: expected a path \(string\), got ''"):
        parse_manifest('[pull]\nbundle = ""\n', "m.toml")

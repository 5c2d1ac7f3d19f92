"""`ollama-provision env`: each tool's form of the address, the four formats, clashes.

The variables are read back the way their consumers read them: `eval` in bash for `sh`,
GitHub's own $GITHUB_ENV syntax for `github`, Ollama's host rules for OLLAMA_HOST. The
real tools reading them against a real server: tests/integration/test_real_clients.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provision.server.address import parse_host
from tests.github_env import github_env_vars

ROOT = Path(__file__).resolve().parent.parent
_SCRUB = ("OLLAMA_HOST", "OLLAMA_PORT", "OLLAMA_BASE_URL", "OLLAMA_API_BASE",
          "OPENAI_BASE_URL", "OPENAI_API_KEY", "GITHUB_ENV", "GITHUB_ACTIONS")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def env_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provision", "env", *args],
                          env=env or clean_env(), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def evaluated(*args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """What a shell has after `eval "$(ollama-provision env ARGS)"`."""
    script = (f'eval "$({sys.executable} -m provision env {" ".join(args)})"; '
              f'{sys.executable} -c "import json, os; print(json.dumps(dict(os.environ)))"')
    done = subprocess.run(["bash", "-c", script], env=env or clean_env(), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_default_forms_for_a_server_on_another_port() -> None:
    shell = evaluated("--host", "127.0.0.1:11500")
    assert shell["OLLAMA_HOST"] == "127.0.0.1:11500"
    assert shell["OLLAMA_BASE_URL"] == shell["OLLAMA_API_BASE"] == "http://127.0.0.1:11500"
    assert shell["OPENAI_BASE_URL"] == "http://127.0.0.1:11500/v1"
    assert shell["OPENAI_API_KEY"] == "ollama"  # non-empty: the OpenAI SDK insists
    assert "OLLAMA_PORT" not in shell  # g4f's split only when asked for


@pytest.mark.parametrize(("host", "ollama_host", "base"), [
    ("127.0.0.1:11434", "127.0.0.1", "http://127.0.0.1:11434"),
    ("[::1]:11500", "[::1]:11500", "http://[::1]:11500"),
    ("https://ollama.example.com/ollama", "https://ollama.example.com:443/ollama",
     "https://ollama.example.com/ollama"),
    ("0.0.0.0:11500", "127.0.0.1:11500", "http://127.0.0.1:11500"),
])
def test_ollama_host_is_what_ollama_reads_as_the_same_server(host: str, ollama_host: str,
                                                             base: str) -> None:
    shell = evaluated("--host", host)
    assert shell["OLLAMA_HOST"] == ollama_host
    assert parse_host(ollama_host).url == parse_host(host).url
    assert shell["OLLAMA_BASE_URL"] == base and shell["OPENAI_BASE_URL"] == base + "/v1"


def test_g4f_split_and_what_its_provider_builds_from_it() -> None:
    shell = evaluated("--host", "127.0.0.1:11500", "--client", "g4f")
    assert (shell["OLLAMA_HOST"], shell["OLLAMA_PORT"]) == ("127.0.0.1", "11500")
    # g4f's own rule (g4f/Provider/local/Ollama.py get_local_base_url), older releases
    # always: http://HOST:PORT/v1.
    assert f"http://{shell['OLLAMA_HOST']}:{shell['OLLAMA_PORT']}/v1" == \
        "http://127.0.0.1:11500/v1"


def test_ollama_and_g4f_agree_on_the_default_port() -> None:
    shell = evaluated("--host", "127.0.0.1:11434", "--client", "ollama", "--client", "g4f")
    assert (shell["OLLAMA_HOST"], shell["OLLAMA_PORT"]) == ("127.0.0.1", "11434")
    assert parse_host(shell["OLLAMA_HOST"]).url == "http://127.0.0.1:11434"


def test_ollama_and_g4f_conflict_on_another_port_and_nothing_is_printed() -> None:
    done = env_cli("--host", "127.0.0.1:11500", "--client", "ollama", "--client", "g4f")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[0] == (
        "error: OLLAMA_HOST: ollama reads OLLAMA_HOST=127.0.0.1:11500, g4f reads "
        "OLLAMA_HOST=127.0.0.1 with OLLAMA_PORT=11500; one variable cannot hold both")
    assert done.stderr.splitlines()[1].startswith("hint: ask for one of them")


def test_g4f_note_for_an_address_older_releases_cannot_build() -> None:
    done = env_cli("--host", "https://ollama.example.com", "--client", "g4f")
    assert done.returncode == 0
    assert "export OLLAMA_HOST=https://ollama.example.com:443\n" in done.stdout
    assert "older g4f releases" in done.stderr


def test_clash_with_the_environment_is_kept_reported_and_secrets_never_shown() -> None:
    env = clean_env(OPENAI_BASE_URL="https://user:pw@api.example.com/v1",
                    OPENAI_API_KEY="sk-real-secret")
    done = env_cli("--host", "127.0.0.1:11500", env=env)
    assert done.returncode == 1
    assert "OPENAI_" not in done.stdout and "export OLLAMA_HOST=" in done.stdout
    assert "OPENAI_BASE_URL is already set here to 'https://***@api.example.com/v1'" \
        in done.stderr
    assert "OPENAI_API_KEY is already set here (its value not shown)" in done.stderr
    assert "sk-real-secret" not in done.stdout + done.stderr
    assert "user:pw" not in done.stdout + done.stderr
    shell = evaluated("--host", "127.0.0.1:11500", env=env)
    assert shell["OPENAI_BASE_URL"] == "https://user:pw@api.example.com/v1"  # untouched
    replaced = evaluated("--host", "127.0.0.1:11500", "--override", env=env)
    assert replaced["OPENAI_BASE_URL"] == "http://127.0.0.1:11500/v1"
    assert replaced["OPENAI_API_KEY"] == "ollama"


def test_the_same_server_spelled_differently_is_no_clash() -> None:
    env = clean_env(OLLAMA_HOST="127.0.0.1:11500", OPENAI_BASE_URL="http://127.0.0.1:11500/v1/")
    done = env_cli(env=env)
    assert done.returncode == 0 and done.stderr == ""
    env = clean_env(OLLAMA_HOST=":11434")
    assert env_cli("--host", "http://127.0.0.1:11434", env=env).returncode == 0


def test_host_credentials_are_never_printed() -> None:
    done = env_cli("--host", "http://alice:s3cret@127.0.0.1:11500")
    assert "s3cret" not in done.stdout + done.stderr
    assert "export OLLAMA_HOST=127.0.0.1:11500" in done.stdout


def test_dotenv_and_json() -> None:
    done = env_cli("--host", "127.0.0.1:11500", "--format", "dotenv")
    assert done.stdout.splitlines() == [
        "OLLAMA_BASE_URL=http://127.0.0.1:11500", "OLLAMA_API_BASE=http://127.0.0.1:11500",
        "OLLAMA_HOST=127.0.0.1:11500", "OPENAI_BASE_URL=http://127.0.0.1:11500/v1",
        "OPENAI_API_KEY=ollama"]
    doc = json.loads(env_cli("--host", "127.0.0.1:11500", "--json").stdout)
    assert doc["schema"] == "ollama-provision.env/1"
    assert doc["variables"]["OPENAI_BASE_URL"] == "http://127.0.0.1:11500/v1"
    assert doc["read_by"]["OPENAI_API_KEY"] == ["openai"] and doc["clashes"] == []
    both = json.loads(env_cli("--json", "--client", "ollama", "--client", "g4f").stdout)
    assert both["read_by"] == {"OLLAMA_HOST": ["ollama", "g4f"], "OLLAMA_PORT": ["g4f"]}


def test_github_appends_for_later_steps(tmp_path: Path) -> None:
    github_env = tmp_path / "github_env"
    github_env.write_text("EARLIER=kept\n")
    env = clean_env(GITHUB_ACTIONS="true", GITHUB_ENV=str(github_env))
    done = env_cli("--host", "127.0.0.1:11500", "--format", "github", "--client", "openai",
                   env=env)
    assert done.returncode == 0, done.stderr
    later = github_env_vars(github_env.read_text())
    assert later == {"EARLIER": "kept", "OPENAI_BASE_URL": "http://127.0.0.1:11500/v1",
                     "OPENAI_API_KEY": "ollama"}
    assert "OPENAI_BASE_URL=http://127.0.0.1:11500/v1 (for later steps" in done.stdout


def test_github_without_github_env_is_an_input_error() -> None:
    done = env_cli("--format", "github")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: --format github appends to $GITHUB_ENV")


@pytest.mark.parametrize(("args", "message"), [
    (("--client", "langchain"), "no environment client 'langchain'; known: base-url, g4f"),
    (("--host", "http://h:99999"), "invalid port '99999'"),
    (("--json", "--format", "sh"), "--json and --format sh: choose one"),
])
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    done = env_cli(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert message in done.stderr.splitlines()[0]
    assert "Traceback" not in done.stderr


def test_dotenv_quoting_of_unusual_values() -> None:
    from provision.clients._env import _dotenv_value

    assert _dotenv_value("http://h:1/v1") == "http://h:1/v1"
    assert _dotenv_value("a b") == "'a b'"
    assert _dotenv_value("it's $HOME") == '"it\'s \\$HOME"'

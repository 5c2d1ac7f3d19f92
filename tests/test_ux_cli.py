"""The command line and its documentation as a new user meets them (issue 13): the README
pasted as written, flags that mean one thing everywhere, usage errors, the server's
address as Ollama reads it, what `check` and `config` say, and the rules for every
command (movement while it waits, nothing wider than the terminal).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.double import OllamaTestServer, free_port
from tests.screen import (
    assert_fits,
    assert_moves,
    assert_start_and_end,
    run_in_terminal,
    run_plain,
)
from tests.tool import ROOT
from tests.ux_support import (
    SMALL,
    home_fixture,  # noqa: F401 (the `home` fixture)
    manifest,
    user_env,
)

README = (ROOT / "README.md").read_text()


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```\w*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def section(text: str, title: str) -> str:
    """A README section: from its heading to the next heading."""
    start = text.index(title)
    end = re.search(r"^#{2,} ", text[start + len(title):], re.MULTILINE)
    return text[start:start + len(title) + (end.start() if end else len(text))]


@pytest.fixture(scope="module")
def server() -> Iterator[OllamaTestServer]:
    with OllamaTestServer(installed=["llama3.2:1b"], vram=[]) as srv:
        yield srv


# --- item 9: the README's test command, pasted --------------------------------------------------


def test_readme_test_block_works_when_pasted() -> None:
    block = code_blocks(README)[1]
    assert "pytest" in block
    assert re.search(r"pip install -e '?\.\[test\]'?", block), block


def test_readme_install_block_installs_and_runs() -> None:
    block = code_blocks(README)[0]
    assert "pip install ." in block and "ollama-provision apply" in block


# --- item 12: flags mean one thing -------------------------------------------------------------


def test_fleet_takes_its_inventory_with_f(server, home: Path) -> None:
    inventory = manifest(home, f'[[hosts]]\nurl = "{server.url}"\n[groups.all]\n'
                         '[[groups.all.models]]\nname = "llama3.2:1b"\n', "fleet.toml")
    run = run_plain("fleet", "-f", inventory, "--no-verify", env=user_env(home, server))
    assert run.code == 0, run.describe()


def test_pull_force_still_pulls_again(server, home: Path) -> None:
    run = run_plain("pull", "--force", "llama3.2:1b", env=user_env(home, server))
    assert run.code == 0, run.describe()
    assert re.search(r"llama3\.2:1b: (unchanged|updated)", run.out), run.describe()


# --- item 13: check, usage, the address ---------------------------------------------------------


def test_check_counts_one_model_in_the_singular(server, home: Path) -> None:
    plain = run_plain("check", env=user_env(home, server))
    shown = run_in_terminal("check", env=user_env(home, server))
    assert plain.code == shown.code == 0
    for text in (plain.out, shown.text):
        assert "1 model" in text and "1 models" not in text, text


@pytest.mark.parametrize("command", ["check", "apply", "pull"])
def test_an_unknown_flag_shows_the_commands_usage(home: Path, command: str) -> None:
    run = run_plain(command, "--bogus", *(["llama3.2:1b"] if command == "pull" else []),
                    env=user_env(home))
    assert run.code == 2
    assert f"usage: ollama-provision {command}" in run.err, run.describe()
    assert "--bogus" in run.err


def test_ollama_host_is_read_as_ollama_reads_it(server, home: Path) -> None:
    quoted = f'"{server.url.split("//", 1)[1]} "'
    run = run_plain("check", env=user_env(home, OLLAMA_HOST=quoted))
    assert run.code == 0, run.describe()


def test_a_registry_without_a_scheme_is_one_clear_line(server, home: Path) -> None:
    env = user_env(home, server, OLLAMA_PROVISION_REGISTRY=server.url.split("//", 1)[1])
    run = run_plain("hardware", "llama3.1:8b", env=env)
    assert "Traceback" not in run.err, run.describe()
    assert run.code in (0, 1, 2), run.describe()


# --- item 10: Codex's messages ------------------------------------------------------------------


@pytest.fixture
def default_address() -> Iterator[OllamaTestServer]:
    """The double on Ollama's default address, where Codex's built-in provider looks."""
    srv = OllamaTestServer(port=11434, vram=[])
    try:
        srv.start()
    except OSError as exc:
        pytest.skip(f"port 11434 is busy here ({exc.strerror})")
    try:
        yield srv
    finally:
        srv.stop()


def test_apply_on_the_default_address_names_the_profile_file(default_address,
                                                             home: Path) -> None:
    env = user_env(home, default_address, OLLAMA_HOST="127.0.0.1:11434")
    run = run_plain("apply", "-f", manifest(home, SMALL), "--assume", "ram=16G,gpu=none",
                    "--codex-version", "0.171.0", env=env)
    assert run.code == 0, run.describe()
    configure = [line for line in run.err.splitlines() if "config.toml" in line]
    assert any("ollama.config.toml" in line for line in configure), run.describe()
    config = home / ".codex" / "config.toml"
    assert not config.exists() or config.read_text().strip(), "an empty config.toml"


def test_config_without_a_model_uses_the_servers_only_model(server, home: Path) -> None:
    run = run_plain("config", "--codex-version", "0.171.0", env=user_env(home, server))
    assert run.code == 0, run.describe()
    assert 'model = "llama3.2:1b"' in (home / ".codex" / "ollama.config.toml").read_text()


def test_config_without_a_model_lists_the_choices(home: Path) -> None:
    with OllamaTestServer(installed=["llama3.2:1b", "qwen2.5:0.5b"]) as srv:
        run = run_plain("config", "--codex-version", "0.171.0", env=user_env(home, srv))
    assert run.code == 2, run.describe()
    assert "llama3.2:1b" in run.err and "qwen2.5:0.5b" in run.err, run.describe()
    assert not (home / ".codex" / "ollama.config.toml").exists()


def test_readme_says_what_happens_to_an_old_ollama_provider(home: Path) -> None:
    codex = home / ".codex"
    codex.mkdir()
    (codex / "config.toml").write_text('[model_providers.ollama]\nname = "Ollama"\n'
                                       'base_url = "http://localhost:11434/v1"\n')
    run = run_plain("config", "llama3.2:1b", "--codex-version", "0.171.0",
                    env=user_env(home, f"127.0.0.1:{free_port()}", OLLAMA_HOST="127.0.0.1:11434"))
    assert run.code == 0, run.describe()
    assert "removed the old [model_providers.ollama]" in run.out, run.describe()
    config = " ".join(section(README, "## `ollama-provision config [MODEL]`").split())
    start = config.index("An old user-defined `[model_providers.ollama]`")
    said = config[start:config.index(". ", start)]
    assert "removed" in said, f"the README says: {said}"


# --- the rules for every command --------------------------------------------------------------


def test_check_moves_while_it_waits_for_the_server(home: Path) -> None:
    run = run_in_terminal("check", "--wait", "3", env=user_env(home, f"127.0.0.1:{free_port()}"))
    assert run.code == 3, run.describe()
    assert_moves(run, end=re.compile("error:|✗"))
    assert_fits(run)


def test_check_logs_when_its_wait_starts(home: Path) -> None:
    run = run_plain("check", "--wait", "1.5", env=user_env(home, f"127.0.0.1:{free_port()}"))
    assert run.code == 3, run.describe()
    assert_start_and_end(run, "waiting for Ollama", "error:", apart=1.2)


def test_config_fits_the_terminal(server, home: Path) -> None:
    """What config wrote, with the user's home as `~`: no line wider than 80 columns."""
    run = run_in_terminal("config", "llama3.2:1b", "--codex-version", "0.171.0",
                          env=user_env(home, server))
    assert run.code == 0, run.describe()
    assert_fits(run)
    assert "created: ~/.codex/config.toml" in run.text, run.describe()

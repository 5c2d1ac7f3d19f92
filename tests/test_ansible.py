"""The Ansible role under scripts/ansible/, run for real by ansible-playbook: several
hosts with `ansible_connection=local`, each pointed at its own test double.

Skipped when ansible-playbook is not installed, unless OLLAMA_PROVISION_REQUIRE_ANSIBLE
is set (CI sets it: there a missing Ansible is a failure)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.double import OllamaTestServer
from tests.fleet_support import TINY, pulls

ROOT = Path(__file__).resolve().parent.parent
ROLES = ROOT / "scripts" / "ansible" / "roles"
BIN = Path(sys.executable).parent


def _playbook_command() -> str | None:
    beside = BIN / "ansible-playbook"  # the venv running the tests
    return str(beside) if beside.exists() else shutil.which("ansible-playbook")


ANSIBLE = _playbook_command()
if ANSIBLE is None and not os.environ.get("OLLAMA_PROVISION_REQUIRE_ANSIBLE"):
    pytest.skip("ansible-playbook is not installed (pip install ansible-core)",
                allow_module_level=True)

PLAY = """
- hosts: ollama
  gather_facts: false
  roles: [ollama_provision]

# A later play reads what the role registered for every host, failed ones included.
- hosts: localhost
  gather_facts: false
  tasks:
    - check_mode: false  # written in --check runs too
      ansible.builtin.copy:
        dest: "{{ facts_out }}"
        content: "{{ dict(groups.ollama | zip(groups.ollama
                     | map('extract', hostvars, 'ollama_provision'))) | to_json }}"
"""
MANIFEST = f'[[models]]\nname = "{TINY}"\n\n[verify]\nnum_predict = 4\n'
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   re.MULTILINE)


class Playbook:
    def __init__(self, tmp_path: Path, registry: OllamaTestServer) -> None:
        assert ANSIBLE is not None, "OLLAMA_PROVISION_REQUIRE_ANSIBLE is set but " \
            "ansible-playbook is missing: pip install ansible-core"
        self.tmp = tmp_path
        self.registry = registry
        (tmp_path / "manifest.toml").write_text(MANIFEST)
        (tmp_path / "play.yml").write_text(PLAY)
        (tmp_path / "ansible.cfg").write_text("[defaults]\n")

    def inventory(self, hosts: dict[str, OllamaTestServer], **common: object) -> None:
        entries = {}
        for name, srv in hosts.items():
            home = self.tmp / name
            entries[name] = {"ollama_provision_host": srv.url, "ollama_provision_environment": {
                "CODEX_HOME": str(home / "codex"), "OLLAMA_MODELS": str(home / "models"),
                "OLLAMA_PROVISION_REGISTRY": self.registry.url,
                "OLLAMA_PROVISION_RETRY_BASE": "0", "PATH": "/usr/bin:/bin"}}
        variables = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                     "ollama_provision_install": False,
                     "ollama_provision_bin": str(BIN / "ollama-provision"),
                     "ollama_provision_manifest": str(self.tmp / "manifest.toml"), **common}
        inventory = {"ollama": {"hosts": entries, "vars": variables}}
        (self.tmp / "inventory.yml").write_text(json.dumps(inventory))

    def run(self, *extra: str) -> tuple[dict[str, dict[str, int]], dict[str, dict], str]:
        """(recap per host, the role's `ollama_provision` fact per host, output)."""
        facts = self.tmp / "facts.json"
        facts.unlink(missing_ok=True)
        env = {**os.environ, "ANSIBLE_CONFIG": str(self.tmp / "ansible.cfg"),
               "ANSIBLE_ROLES_PATH": str(ROLES), "ANSIBLE_HOME": str(self.tmp / ".ansible"),
               "ANSIBLE_LOCAL_TEMP": str(self.tmp / ".ansible" / "tmp"),
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
        done = subprocess.run(
            [str(ANSIBLE), "-i", str(self.tmp / "inventory.yml"), str(self.tmp / "play.yml"),
             "-e", f"facts_out={facts}", *extra],
            cwd=self.tmp, env=env, capture_output=True, text=True, timeout=120)
        recap = {m[0]: {"ok": int(m[1]), "changed": int(m[2]), "failed": int(m[4])}
                 for m in RECAP.findall(done.stdout)}
        assert recap, done.stdout + done.stderr
        return recap, json.loads(facts.read_text()), done.stdout


@pytest.fixture
def registry():  # noqa: ANN201
    with OllamaTestServer() as srv:
        yield srv


def test_first_run_changed_second_ok_and_a_not_ready_host_fails(tmp_path, registry,  # noqa: ANN001
                                                                 make_ollama) -> None:  # noqa: ANN001
    h1, h2 = make_ollama(upstream=registry), make_ollama(upstream=registry)
    bad = make_ollama(upstream=registry)
    bad.add_fault("registry_unreachable", times=None)  # its pull can never succeed
    book = Playbook(tmp_path, registry)
    book.inventory({"h1": h1, "h2": h2, "bad": bad})

    recap, facts, output = book.run()
    for name in ("h1", "h2"):
        assert recap[name]["changed"] == 1 and recap[name]["failed"] == 0, output
        assert facts[name]["schema"] == "ollama-provision.apply/1"
        assert facts[name]["ready"] and facts[name]["changed"]
    assert h1.installed_names() == [TINY] and h2.installed_names() == [TINY]
    assert recap["bad"]["failed"] == 1 and recap["bad"]["changed"] == 0
    assert facts["bad"]["ready"] is False and facts["bad"]["exit_code"] == 1
    assert "cannot reach the registry" in facts["bad"]["models"][0]["error"]

    recap, facts, output = book.run()
    for name in ("h1", "h2"):
        assert recap[name]["changed"] == 0 and recap[name]["failed"] == 0, output
        assert facts[name]["ready"] and not facts[name]["changed"]
    assert pulls(h1) == [TINY]  # the second run pulled nothing
    assert recap["bad"]["failed"] == 1


def test_check_mode_reports_what_would_change_and_changes_nothing(tmp_path, registry,  # noqa: ANN001
                                                                   make_ollama) -> None:  # noqa: ANN001
    fresh = make_ollama(upstream=registry)
    book = Playbook(tmp_path, registry)
    book.inventory({"fresh": fresh})
    recap, facts, output = book.run("--check")
    assert recap["fresh"]["changed"] == 1 and recap["fresh"]["failed"] == 0, output
    assert facts["fresh"]["dry_run"] is True
    assert pulls(fresh) == [] and fresh.installed_names() == []


def test_the_role_installs_the_tool_into_its_own_venv(tmp_path, registry,  # noqa: ANN001
                                                      make_ollama) -> None:  # noqa: ANN001
    source = tmp_path / "src"  # a copy of the project: pip builds there, not in the checkout
    shutil.copytree(ROOT / "provision", source / "provision",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    srv = make_ollama(upstream=registry)
    book = Playbook(tmp_path, registry)
    book.inventory({"box": srv}, ollama_provision_install=True,
                   ollama_provision_package=str(source), ollama_provision_venv=str(venv),
                   ollama_provision_bin=str(venv / "bin" / "ollama-provision"),
                   ollama_provision_python=sys.executable)
    recap, facts, output = book.run()
    assert recap["box"]["failed"] == 0, output
    assert (venv / "bin" / "ollama-provision").exists()
    assert facts["box"]["ready"] and srv.installed_names() == [TINY]

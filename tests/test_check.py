"""`ollama-provision check`: every diagnosis path, against real servers on loopback."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from provision.cli import main
from provision.http import Timeouts
from provision.server import OllamaServer, ServerAddress, ServerFacts, parse_host
from provision.server.local_install import detect_install, start_steps
from tests.double import Fault, NotOllamaServer, OllamaTestServer, free_port


def probe(address: ServerAddress, timeouts: Timeouts = Timeouts()) -> ServerFacts:
    with OllamaServer(address, timeouts=timeouts) as server:
        return server.probe()


def run_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code, out, _ = run_check(capsys, "--json", *args)
    return code, json.loads(out)


def fake_ollama_on_path(tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "ollama"
    exe.write_text("#!/bin/sh\necho 'ollama version is 0.13.5'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(bin_dir)


# --- reachable ---------------------------------------------------------------------------


def test_ready_with_models_present(capsys, make_ollama) -> None:
    srv = make_ollama(installed=["llama3.2:1b", "qwen2.5:14b"])
    code, doc = check_json(capsys, "--host", srv.url, "llama3.2:1b", "QWEN2.5:14B")
    assert code == 0
    assert doc["ready"] is True
    assert doc["server"]["version"] == srv.version
    assert doc["server"]["model_count"] == 2
    by_name = {m["name"]: m for m in doc["models"]}
    assert by_name["llama3.2:1b"]["present"] is True
    assert by_name["llama3.2:1b"]["size"] > 1_000_000_000
    assert by_name["llama3.2:1b"]["quantization"]
    assert by_name["qwen2.5:14b"]["present"] is True


def test_full_registry_name_matches_short_listing(capsys, make_ollama) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    code, doc = check_json(capsys, "--host", srv.url, "registry.ollama.ai/library/llama3.2:1b")
    assert code == 0 and doc["models"][0]["present"] is True


def test_missing_model_is_not_ready(capsys, make_ollama) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    code, out, err = run_check(capsys, "--host", srv.url, "llama3.2:1b", "llama3.1:8b")
    assert code == 1
    assert "model llama3.2:1b: present" in out
    assert "model llama3.1:8b: missing" in out
    assert "ollama-provision pull llama3.1:8b" in out


def test_ollama_host_env_is_used(capsys, make_ollama, monkeypatch) -> None:
    srv = make_ollama()
    monkeypatch.setenv("OLLAMA_HOST", srv.url.replace("http://", ""))
    code, doc = check_json(capsys)
    assert code == 0
    assert doc["server"]["source"] == "env"


def test_listen_all_address_connects_to_loopback(capsys, make_ollama, monkeypatch) -> None:
    srv = make_ollama()
    monkeypatch.setenv("OLLAMA_HOST", f"0.0.0.0:{srv.port}")
    code, out, err = run_check(capsys)
    assert code == 0
    assert "listen address" in err


def test_requests_identify_the_tool(capsys, make_ollama) -> None:
    srv = make_ollama()
    run_check(capsys, "--host", srv.url)
    agents = {r.headers.get("user-agent", "") for r in srv.requests}
    assert agents and all(a.startswith("ollama-provision/") for a in agents)


def test_old_server_warns_about_codex(capsys, make_ollama) -> None:
    srv = make_ollama(version="0.12.9")
    code, doc = check_json(capsys, "--host", srv.url)
    assert code == 0
    assert doc["server"]["responses_api"] is False
    assert any("0.13.4" in w for w in doc["warnings"])
    code, doc = check_json(capsys, "--host", srv.url, "--min-version", "0.13.4")
    assert code == 1 and doc["ready"] is False


def test_loopback_ignores_proxy_variables(capsys, make_ollama, monkeypatch) -> None:
    srv = make_ollama()
    dead = f"http://127.0.0.1:{free_port()}"
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(var, dead)
    code, _ = check_json(capsys, "--host", srv.url)
    assert code == 0


# --- input errors ------------------------------------------------------------------------


def test_invalid_model_name_fails_before_any_request(capsys, make_ollama) -> None:
    srv = make_ollama()
    code, out, err = run_check(capsys, "--host", srv.url, "llama 3")
    assert code == 2
    assert err.startswith("error: invalid model name 'llama 3'")
    assert "Traceback" not in err
    assert srv.requests == []


def test_invalid_port_is_reported(capsys, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:99999")
    code, out, err = run_check(capsys)
    assert code == 2
    assert "invalid port '99999'" in err


# --- unreachable: each cause its own message --------------------------------------------


def test_installed_but_not_running(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", fake_ollama_on_path(tmp_path) + os.pathsep + "/usr/bin:/bin")
    port = free_port()
    code, doc = check_json(capsys, "--host", f"127.0.0.1:{port}")
    assert code == 3
    assert doc["diagnosis"]["kind"] == "not-running"
    assert str(tmp_path / "bin" / "ollama") in doc["diagnosis"]["message"]
    # A non-default port: the start command must bring the server up where we look.
    assert any(f"OLLAMA_HOST=127.0.0.1:{port} ollama serve" in f
               for f in doc["diagnosis"]["fixes"])


@pytest.mark.skipif(detect_install(environ={"PATH": ""}).installed,
                    reason="Ollama is really installed on this machine")
def test_not_installed_gives_install_steps(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code, out, err = run_check(capsys, "--host", f"127.0.0.1:{free_port()}")
    assert code == 3
    assert "not seem to be installed" in err
    if sys.platform.startswith("linux"):
        assert "https://ollama.com/install.sh" in err
    assert "docker run" in err


def test_systemd_install_is_started_with_systemctl(tmp_path) -> None:
    unit_dir = tmp_path / "etc" / "systemd" / "system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "ollama.service").write_text("[Service]\nExecStart=/usr/local/bin/ollama serve\n")
    install = detect_install(root=str(tmp_path), environ={"PATH": ""}, platform="linux")
    assert install.installed and install.systemd_unit
    assert start_steps(install)[0] == "sudo systemctl start ollama"
    mac = tmp_path / "Applications" / "Ollama.app"
    mac.mkdir(parents=True)
    app = detect_install(root=str(tmp_path), environ={"PATH": ""}, platform="darwin")
    assert start_steps(app, "darwin") == ["open -a Ollama"]


def test_remote_refused_explains_listen_address() -> None:
    # Nothing but loopback may be contacted here, so the "remote" server is a name that is
    # not loopback while the connection itself goes to a closed loopback port.
    address = replace(parse_host(f"127.0.0.1:{free_port()}"), host="gpu1.lab")
    result = probe(address)
    assert result.diagnosis is not None
    assert result.diagnosis.kind == "connection-refused"
    assert "OLLAMA_HOST=0.0.0.0" in " ".join(result.diagnosis.fixes)


def test_dns_failure(capsys) -> None:
    code, doc = check_json(capsys, "--host", "no-such-host.invalid:11434")
    assert code == 3
    assert doc["diagnosis"]["kind"] == "dns-failure"
    assert "no-such-host.invalid" in doc["diagnosis"]["message"]


def test_something_else_on_the_port(capsys) -> None:
    with NotOllamaServer(kind="nginx") as other:
        code, doc = check_json(capsys, "--host", other.url)
    assert code == 3
    assert doc["diagnosis"]["kind"] == "not-ollama"
    assert "nginx" in doc["diagnosis"]["message"]
    assert any("ss -ltnp" in f for f in doc["diagnosis"]["fixes"])


def test_non_http_service_on_the_port(capsys) -> None:
    with NotOllamaServer(kind="raw") as other:
        code, doc = check_json(capsys, "--host", other.url)
    assert code == 3
    assert doc["diagnosis"]["kind"] == "not-ollama"
    assert "not with HTTP" in doc["diagnosis"]["message"]


def test_connect_timeout(tmp_path) -> None:
    # A listening socket whose accept queue is full drops new SYNs: the connect hangs,
    # as it does behind a firewall that drops packets.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.1)
        result = probe(parse_host(f"127.0.0.1:{port}"), timeouts=Timeouts(connect=0.5, read=0.5))
    finally:
        for s in fillers:
            s.close()
        server.close()
    assert result.diagnosis is not None
    assert result.diagnosis.kind in ("timeout", "no-answer")


def test_server_that_never_answers(make_ollama) -> None:
    srv = make_ollama()
    srv.faults.append(Fault("slow_headers", endpoint=None, seconds=3, times=None))
    result = probe(parse_host(srv.url), timeouts=Timeouts(connect=1, read=0.3))
    assert result.diagnosis is not None and result.diagnosis.kind == "no-answer"
    assert "--wait" in " ".join(result.diagnosis.fixes)


def test_https_against_plain_http_server(capsys, make_ollama) -> None:
    srv = make_ollama()
    code, doc = check_json(capsys, "--host", srv.url.replace("http://", "https://"))
    assert code == 3
    assert doc["diagnosis"]["kind"] == "tls-error"
    assert srv.url in doc["diagnosis"]["fixes"][0]


def test_http_server_error_page_is_not_ollama(make_ollama) -> None:
    srv = make_ollama()
    srv.faults.append(Fault("http_500", endpoint="/", times=None, message="boom"))
    srv.faults.append(Fault("http_500", endpoint="/api/version", times=None, message="boom"))
    result = probe(parse_host(srv.url))
    assert result.diagnosis is not None and result.diagnosis.kind == "not-ollama"
    assert "HTTP 500" in result.diagnosis.message


def test_proxy_in_the_way(capsys, monkeypatch) -> None:
    dead_proxy = f"http://user:secret@127.0.0.1:{free_port()}"
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    code, out, err = run_check(capsys, "--json", "--host", "ollama.example.test:11434")
    doc = json.loads(out)
    assert code == 3
    assert doc["diagnosis"]["kind"] == "proxy-error"
    assert "NO_PROXY=ollama.example.test" in " ".join(doc["diagnosis"]["fixes"])
    assert "secret" not in out + err  # proxy credentials are never printed


# --- --wait ------------------------------------------------------------------------------


def test_wait_until_the_server_starts(capsys) -> None:
    port = free_port()
    srv = OllamaTestServer(port=port)
    starter = threading.Timer(0.8, srv.start)
    starter.start()
    try:
        code, out, err = run_check(capsys, "--host", f"127.0.0.1:{port}", "--wait", "20")
    finally:
        starter.join()
        srv.stop()
    assert code == 0
    assert "waiting for Ollama" in err


def test_wait_gives_up(capsys) -> None:
    code, doc = check_json(capsys, "--host", f"127.0.0.1:{free_port()}", "--wait", "0.6")
    assert code == 3 and doc["diagnosis"]["kind"] in ("not-running", "not-installed")


# --- output modes ------------------------------------------------------------------------


def test_terminal_view_is_a_table(capsys, make_ollama, monkeypatch) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("TERM", raising=False)
    code, out, _ = run_check(capsys, "--host", srv.url, "llama3.2:1b", "qwen2.5:14b")
    assert code == 1
    assert "\x1b[" in out  # styled
    assert "present" in out and "missing" in out
    assert "ollama-provision pull qwen2.5:14b" in out


def test_console_script_runs_as_a_process(make_ollama) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    proc = subprocess.run(
        [sys.executable, "-m", "provision", "check", "--json", "--host", srv.url, "llama3.2:1b"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ready"] is True


def test_hardware_verdicts_on_request(capsys, make_ollama, monkeypatch) -> None:
    srv = make_ollama(installed=["llama3.2:1b"])
    monkeypatch.setenv("OLLAMA_PROVISION_REGISTRY", srv.url)
    code, doc = check_json(capsys, "--host", srv.url, "--hardware", "llama3.2:1b",
                           "llama3.1:70b")
    by_name = {m["name"]: m for m in doc["models"]}
    assert by_name["llama3.2:1b"]["hardware"]["verdict"] in ("gpu", "partial", "cpu")
    assert by_name["llama3.1:70b"]["present"] is False
    assert by_name["llama3.1:70b"]["hardware"]["verdict"] in ("gpu", "partial", "cpu", "no-fit")
    code, doc = check_json(capsys, "--host", srv.url, "llama3.2:1b")
    assert "hardware" not in doc["models"][0]  # not asked: no slow probes


def test_check_json_stays_off_slow_imports(make_ollama) -> None:
    # py-cpuinfo's probe takes a second and rich's import tens of ms: `check --json`
    # (called in CI loops) must load neither.
    srv = make_ollama()
    code = (
        "import sys; from provision.cli import main; "
        f"rc = main(['check', '--json', '--host', '{srv.url}']); "
        "print(sorted(m for m in ('cpuinfo', 'rich', 'psutil', 'tomlkit') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.fixture
def tls_server(tmp_path):  # noqa: ANN001, ANN201
    """A real HTTPS server on loopback with a self-signed certificate."""
    import http.server
    import shutil
    import ssl

    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_untrusted_certificate(capsys, tls_server) -> None:
    code, doc = check_json(capsys, "--host", f"https://127.0.0.1:{tls_server}")
    assert code == 3
    assert doc["diagnosis"]["kind"] == "tls-error"
    assert "not trusted" in doc["diagnosis"]["message"]
    assert any("SSL_CERT_FILE" in f for f in doc["diagnosis"]["fixes"])


def test_plain_http_to_a_tls_port(capsys, tls_server) -> None:
    code, doc = check_json(capsys, "--host", f"http://127.0.0.1:{tls_server}")
    assert code == 3
    assert doc["diagnosis"]["kind"] in ("not-ollama", "tls-error")
    assert any(f"https://127.0.0.1:{tls_server}" in f for f in doc["diagnosis"]["fixes"])


def test_server_whose_model_list_fails_is_reachable_but_not_ready(capsys, make_ollama) -> None:
    srv = make_ollama()
    srv.faults.append(Fault("http_500", endpoint="/api/tags", times=None, message="boom"))
    code, doc = check_json(capsys, "--host", srv.url)
    assert code == 1
    assert doc["server"]["reachable"] is True and doc["server"]["version"] == srv.version
    assert doc["diagnosis"]["kind"] == "server-error"
    assert "/api/tags" in doc["diagnosis"]["message"]

"""What a user sees while pulling: bars on a terminal, plain lines in a CI log, JSON.

The terminal is a rich Console on a StringIO forced to behave like a terminal; the
plain log is a StringIO. Pulls run over real HTTP against the test double.
"""

from __future__ import annotations

import io
import json
import re
import time

import pytest
from rich.console import Console

from provision.cli import main
from provision.models.progress import PlainReporter, TerminalReporter
from provision.models.pull import PullOptions, pull_models
from provision.names import parse_name
from provision.server import OllamaServer, parse_host
from tests.double import OllamaTestServer

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BLOB_LINE = re.compile(r"pulling ([0-9a-f]{12}) +(\d+)% ▕[█ ]+▏ (\S+)")
TOTAL_LINE = re.compile(r"total +(\d+)% ▕[█ ]+▏ ")


pytestmark = pytest.mark.usefixtures("pull_env")


def terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=120, color_system=None), buffer


def screen_lines(raw: str) -> list[str]:
    """Every line the terminal was shown, in order (frames one after another)."""
    return [line for line in re.split(r"[\r\n]", ANSI.sub("", raw)) if line.strip()]


def pull_on(srv: OllamaTestServer, reporter, *names: str, **options) -> list:
    options.setdefault("check_disk", False)
    options.setdefault("backoff_base", 0.01)
    with reporter:
        return pull_models(OllamaServer(parse_host(srv.url)), [parse_name(n) for n in names],
                           PullOptions(**options), reporter)


def weights_hex(srv: OllamaTestServer, name: str) -> str:
    manifest = srv.manifest(name)
    digest = next(x["digest"] for x in manifest["layers"]
                  if x["mediaType"] == "application/vnd.ollama.image.model")
    return digest.split(":")[1][:12]


# --- terminal ----------------------------------------------------------------------------


def test_terminal_shows_blob_bars_and_a_model_total(make_ollama, monkeypatch) -> None:
    srv = make_ollama(download_rate=3e9, tick=0.01)
    monkeypatch.setenv("OLLAMA_PROVISION_REGISTRY", srv.url)  # manifests: the full size
    console, buffer = terminal()
    [outcome] = pull_on(srv, TerminalReporter(console), "llama3.2:1b", check_disk=True)
    assert outcome.status == "pulled"
    lines = screen_lines(buffer.getvalue())
    weights = weights_hex(srv, "llama3.2:1b")
    in_flight = [line for line in lines if f"pulling {weights}" in line
                 and " 100% " not in line]
    # `pulling 6a0746a1ec1a  45% ▕████  ▏ 2.1/4.7 GB`, like the Ollama CLI
    assert any(re.search(r"\d+% ▕█*\s*▏ [\d.]+/1\.3 GB$", line) for line in in_flight)
    # The model's total counts all its blobs from the start (the manifest's size), and
    # alone shows the speed and the time left (one speed per model).
    totals = [line for line in lines if TOTAL_LINE.search(line)]
    assert totals and all("/1.3 GB" in line for line in totals)
    assert any(re.search(r"/1\.3 GB  [\d.]+ [KMG]?B/s  \d+s", line) for line in totals)
    assert not any(re.search(r"B/s", line) for line in in_flight)
    assert len(totals) == len([line for line in lines if line.startswith("llama3.2:1b  ")])
    assert re.search(r"✓ llama3\.2:1b 100% ▕█+▏ 1\.3/1\.3 GB", lines[-1])


def test_terminal_progress_never_goes_backwards(make_ollama) -> None:
    srv = make_ollama(download_rate=3e9, tick=0.01)
    srv.add_fault("backwards", after_bytes=300_000_000)  # at 50 % it drops by 300 MB
    console, buffer = terminal()
    [outcome] = pull_on(srv, TerminalReporter(console), "llama3.2:1b")
    assert outcome.status == "pulled" and outcome.retries == 0
    lines = screen_lines(buffer.getvalue())
    weights = weights_hex(srv, "llama3.2:1b")
    shown = [int(m.group(2)) for line in lines
             if (m := BLOB_LINE.search(line)) and m.group(1) == weights]
    assert len(shown) >= 3
    assert shown == sorted(shown)
    totals = [int(m.group(1)) for line in lines if (m := TOTAL_LINE.search(line))]
    assert totals == sorted(totals)
    assert not any(re.search(r"-\d[\d.]* [KMG]?B/s", line) for line in lines)


def test_terminal_redraws_at_most_about_ten_times_a_second(make_ollama) -> None:
    srv = make_ollama(download_rate=2e9, tick=0.0002)  # thousands of progress lines
    console, buffer = terminal()
    started = time.monotonic()
    pull_on(srv, TerminalReporter(console), "llama3.2:1b")
    elapsed = time.monotonic() - started
    sent = srv.requests_to("/api/pull")[0].bytes_sent // 200  # lines are < 200 bytes
    frames = sum(1 for line in screen_lines(buffer.getvalue())
                 if line.startswith("llama3.2:1b  "))
    assert frames <= 10 * elapsed + 3
    assert sent > 5 * frames  # many more events than redraws


def test_terminal_shows_retry_and_resume_as_lines(make_ollama) -> None:
    srv = make_ollama()
    srv.add_fault("drop", after_bytes=500_000_000)
    console, buffer = terminal()
    pull_on(srv, TerminalReporter(console), "llama3.2:1b")
    text = "\n".join(screen_lines(buffer.getvalue()))
    assert "! llama3.2:1b: the connection to the server dropped mid-stream; retry 1/5" in text
    assert "↻ llama3.2:1b: resumed at 500.0 MB/1.3 GB (37%) of blob" in text


def test_force_color_styles_the_summary_but_draws_no_bars(capsys, make_ollama,
                                                        monkeypatch) -> None:
    """FORCE_COLOR (CI systems set it) asks for colours, not for a live display: a log
    gets plain progress lines, no cursor movement (issue 13); the result is styled."""
    srv = make_ollama(download_rate=5e9)
    monkeypatch.setenv("OLLAMA_PROVISION_REGISTRY", srv.url)
    monkeypatch.setenv("FORCE_COLOR", "1")
    code = main(["pull", "--host", srv.url, "llama3.2:1b", "nope:1b"])
    captured = capsys.readouterr()
    assert code == 1
    assert "▕" not in captured.err and not re.search(r"\x1b\[[0-9;]*[A-LJKsuh]", captured.err)
    assert captured.err.startswith("pulling llama3.2:1b\n")
    assert "\x1b[" in captured.out  # styled
    out = ANSI.sub("", captured.out)
    assert "✓ llama3.2:1b: pulled (1.3 GB in" in out
    assert "✗ nope:1b: failed (unknown-model)" in out


# --- plain (CI logs) ---------------------------------------------------------------------


def test_plain_log_has_start_tenths_and_end_lines(make_ollama) -> None:
    srv = make_ollama(download_rate=5e9)
    log = io.StringIO()
    pull_on(srv, PlainReporter(log), "llama3.2:1b")
    lines = log.getvalue().splitlines()
    assert lines[0] == "pulling llama3.2:1b"
    assert re.fullmatch(r"llama3\.2:1b: pulled: 1\.3 GB in \d+s \([\d.]+ [KMG]?B/s\)",
                        lines[-1])
    middle = [int(re.match(r"llama3\.2:1b: (\d+)%", line).group(1)) for line in lines[1:-1]]
    assert 5 <= len(middle) <= 11  # about every 10 %, not every event
    tenths = [p // 10 for p in middle]
    assert tenths == sorted(set(tenths))
    assert middle[-1] == 100


def test_plain_log_also_writes_a_line_every_interval(make_ollama) -> None:
    # A slow download crosses no 10 % mark for a long time: the log still moves.
    srv = make_ollama(download_rate=2e9, tick=0.005)
    now = [0.0]

    def clock() -> float:  # every reading is 4 s later: 10 s pass every 3 events
        now[0] += 4.0
        return now[0]

    log = io.StringIO()
    pull_on(srv, PlainReporter(log, clock=clock), "llama3.2:1b")
    progress = [line for line in log.getvalue().splitlines() if "%" in line]
    assert len(progress) > 20
    assert all(re.search(r"\d+% \(.* left\)$|100% \(", line) for line in progress)


def test_plain_log_never_goes_backwards(make_ollama) -> None:
    srv = make_ollama(download_rate=3e9)
    srv.add_fault("backwards", after_bytes=400_000_000)
    now = [0.0]

    def clock() -> float:
        now[0] += 4.0
        return now[0]

    log = io.StringIO()
    pull_on(srv, PlainReporter(log, clock=clock), "llama3.2:1b")
    shown = [int(m.group(1)) for line in log.getvalue().splitlines()
             if (m := re.match(r"llama3\.2:1b: (\d+)%", line))]
    assert len(shown) > 5 and shown == sorted(shown)


def test_plain_log_is_what_the_cli_writes_when_not_a_terminal(capsys, make_ollama,
                                                              monkeypatch) -> None:
    srv = make_ollama()
    monkeypatch.setenv("OLLAMA_PROVISION_REGISTRY", srv.url)
    code = main(["pull", "--host", srv.url, "llama3.2:1b"])
    captured = capsys.readouterr()
    assert code == 0
    assert "\x1b[" not in captured.err + captured.out
    assert captured.err.startswith("pulling llama3.2:1b\n")
    assert captured.out == f"llama3.2:1b: pulled ({captured.out.split('(', 1)[1]}"


# --- quiet and json ----------------------------------------------------------------------


def test_quiet_prints_nothing_on_success_and_only_errors_on_failure(capsys, make_ollama,
                                                                    monkeypatch) -> None:
    srv = make_ollama()
    monkeypatch.setenv("OLLAMA_PROVISION_REGISTRY", srv.url)
    assert main(["pull", "--host", srv.url, "-q", "llama3.2:1b"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert main(["pull", "--host", srv.url, "-q", "nope:1b"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: nope:1b: not found in the registry")


def test_json_is_one_document_on_stdout_with_progress_on_stderr(capsys, make_ollama,
                                                                monkeypatch) -> None:
    srv = make_ollama(installed=["qwen2.5:0.5b"])
    monkeypatch.setenv("OLLAMA_PROVISION_REGISTRY", srv.url)
    code = main(["pull", "--host", srv.url, "--json", "llama3.2:1b", "qwen2.5:0.5b"])
    captured = capsys.readouterr()
    assert code == 0
    doc = json.loads(captured.out)  # the whole of stdout is one document
    assert doc["exit_code"] == 0 and doc["server"]["url"] == srv.url
    assert doc["server"]["version"] == srv.version
    assert [m["status"] for m in doc["models"]] == ["pulled", "present"]
    assert set(doc["models"][0]) == {"name", "status", "size", "downloaded", "duration_s",
                                     "retries", "retry_reasons", "resumed", "error"}
    assert "pulling llama3.2:1b" in captured.err

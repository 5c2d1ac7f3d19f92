"""`ollama-provision hardware [MODEL...]`: what this machine can run, before downloading.

Thin layer: parse, probe (or `--assume`), `provision.hardware.assess`, render.
Everything heavy is imported inside `run`, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from provision.commands import common_options, whole_number
from provision.output import counted, human_bytes, short_path
from provision.result import CommandResult

if TYPE_CHECKING:  # the real imports happen inside run(): `--help` stays instant
    from provision.hardware import HardwareReport, Machine, ModelReport
    from provision.output import Output

GIB = 1 << 30


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "hardware",
        parents=[common_options()],
        help="what this machine (or --assume'd one) can run, before downloading",
        description="Describe this machine (CPU, RAM, GPUs, disk) and judge MODELs against it: "
        "memory needed at the context Ollama will use, where they run (GPU, partly, CPU) and "
        "how fast, or why they do not fit and what would. Exit 0 all fit, 1 a model does "
        "not fit (or is unknown), 2 input error.",
    )
    parser.add_argument("models", nargs="*", metavar="MODEL", help="models to judge")
    parser.add_argument("--num-ctx", type=whole_number(1), metavar="N",
                        help="context length to judge at (default: what the server would use)")
    parser.add_argument("--assume", action="append", default=[], metavar="SPEC",
                        help="judge another machine: KEY=VALUE,... (ram=64G,gpu=2x24G,disk=1T,"
                        "ollama=0.15.5) or a TOML/JSON profile; repeatable")
    parser.add_argument("--require", choices=("cpu", "partial", "gpu"), default="cpu",
                        help="least placement a model must get to pass: cpu (runs at all, "
                        "default), partial (some layers on GPU), gpu (all on GPU)")
    parser.add_argument("--offline", action="store_true",
                        help="do not ask the registry: models not installed get a rough "
                        "estimate from their tag")
    parser.add_argument("--insecure", action="store_true",
                        help="the registry in a model name speaks plain HTTP")
    parser.add_argument("--full-header", action="store_true",
                        help="read whole GGUF headers (several MiB each) for exact per-layer "
                        "sizes instead of stopping at 4 MiB")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `--help` and argument errors stay instant.
    from provision.hardware import Disk, assess, parse_assume, probe_machine
    from provision.names import parse_names
    from provision.output import Output
    from provision.server import OllamaServer, resolve_host

    out = Output(json_mode=args.json, quiet=args.quiet)
    names = parse_names(args.models)  # invalid names fail here, before any request
    version = None
    if args.assume:
        assumption = parse_assume(args.assume)
        machine, version = assumption.machine, assumption.server_version
        address = resolve_host(args.host) if args.host else None
        server = OllamaServer(address) if address else None
    else:
        address = resolve_host(args.host)
        server = OllamaServer(address)
        remote = not address.is_loopback
        machine = probe_machine(disk=Disk(path="", source="remote", free=None) if remote
                                else None, server=server)
        if remote:
            out.warn(f"the server {address.url} is another machine: this report judges this "
                     "one (describe the server with --assume, or run this there)")
    for note in address.notes if address else ():
        out.warn(note)
    with contextlib.ExitStack() as owned:
        if server is not None:
            owned.enter_context(server)
        if names and not args.offline:  # registry reads: seconds on a slow link
            count = counted(len(names), "model")
            owned.enter_context(out.activity(f"judging {count} (what each needs: from the "
                                             "server, else the registry)"))
        report = assess(names, machine, server=server, num_ctx=args.num_ctx,
                        require=args.require, server_version=version, offline=args.offline,
                        insecure=args.insecure,
                        header_budget=(1 << 30) if args.full_header else None)
    if args.json:
        out.emit_result(to_result(report))
    elif out.terminal:
        _render_rich(report, out)
    else:
        _render_plain(report, out)
    for warning in report.warnings:
        out.warn(warning)
    for model in report.models:
        if model.error:
            out.error(model.error if model.name in model.error else
                      f"{model.name}: {model.error}")
    return report.exit_code


# -- JSON ------------------------------------------------------------------------------------


def to_result(report: HardwareReport) -> CommandResult:
    from provision.hardware import machine_to_json

    server = report.server
    return CommandResult("hardware", report.exit_code, {
        "require": report.require,
        "machine": machine_to_json(report.machine),
        "server": {"url": server.address.url if server else None,
                   "reachable": server.reachable if server else False,
                   "version": report.version, "version_source": report.version_source},
        "models": [_model_json(m) for m in report.models],
        "warnings": list(report.warnings),
    })


def _model_json(m: ModelReport) -> dict[str, Any]:
    needs, fit = m.needs, m.fit
    doc: dict[str, Any] = {"name": m.name, "verdict": m.verdict, "meets_requirement": m.meets,
                           "error": m.error}
    if needs is None or fit is None:
        return doc
    doc.update({
        "source": needs.source,
        "detail": needs.detail,
        "installed": needs.installed,
        "architecture": needs.arch.name if needs.source != "rough" else None,
        "parameter_size": needs.parameter_size or None,
        "quantization": needs.quantization or None,
        "download": needs.download,
        "weights": needs.weights,
        "exact_layers": needs.exact_layers,
        "context": {"num_ctx": fit.settings.num_ctx, "source": fit.settings.num_ctx_source,
                    "parallel": fit.settings.parallel, "kv_cache_type": fit.settings.kv_type,
                    "flash_attention": fit.settings.flash_attention,
                    "trained": needs.arch.context_length or None},
        "memory": {"weights": fit.weights, "kv_cache": fit.kv_cache, "graph": fit.graph,
                   "gpu_overhead": fit.gpu_overhead, "total": fit.total, "vram": fit.vram,
                   "ram": fit.ram},
        "where": fit.where,
        "layers": {"on_gpu": fit.layers_on_gpu, "total": fit.layers_total},
        "placements": [{"gpu": p.gpu, "name": p.name, "layers": p.layers, "vram": p.vram,
                        "free": p.free} for p in fit.placements],
        "headroom": {"vram": fit.headroom_vram, "ram": fit.headroom_ram,
                     "disk": fit.headroom_disk},
        "reasons": [{"kind": r.kind, "need": r.need, "have": r.have, "message": r.message}
                    for r in fit.reasons],
        "tokens_per_second": [round(x, 1) for x in fit.tokens_per_second]
        if fit.tokens_per_second else None,
        "would_fit": {"num_ctx": m.would_fit[0], "verdict": m.would_fit[1]}
        if m.would_fit else None,
        "alternatives": [{"name": a.name, "kind": a.kind, "verdict": a.fit.verdict,
                          "download": a.needs.download, "memory": a.fit.total,
                          "num_ctx": a.fit.settings.num_ctx} for a in m.alternatives],
        "registry": {"requests": needs.requests, "bytes_read": needs.bytes_read}
        if needs.source == "registry" else None,
        "notes": list(fit.notes),
    })
    return doc


# -- text ------------------------------------------------------------------------------------


def _gib(n: int | None) -> str:
    if n is None:
        return "?"
    if abs(n) >= GIB / 10:
        return f"{n / GIB:.1f} GiB"
    if abs(n) >= 10 << 20:
        return f"{n / (1 << 20):.0f} MiB"
    if abs(n) >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n / 1024:.0f} KiB"


def machine_lines(machine: Machine) -> list[str]:
    cpu, mem = machine.cpu, machine.memory
    cores = f"{cpu.logical} CPUs" if cpu.logical else "cores not given"
    cores += f", {cpu.physical} cores" if cpu.physical else ""
    if cpu.quota is not None:
        cores += f", cgroup quota {cpu.quota:g}"
    flags = " ".join(cpu.flags) or ("flags not given" if machine.source != "probed" else "no AVX")
    lines = [f"machine: {machine.os} {machine.arch}"
             + ("" if machine.source == "probed" else f" - {machine.source}"),
             f"  cpu:  {cpu.model} ({cores}; {flags})",
             f"  ram:  {_gib(mem.total)} total, {_gib(mem.available)} available"
             + (f", swap {_gib(mem.swap_free)} free" if mem.swap_total else ", no swap")
             + (f" (cgroup limit; host {_gib(mem.host_total)})" if mem.limit else "")]
    if not machine.gpus:
        lines.append("  gpu:  none")
    for gpu in machine.gpus:
        facts = [f"{_gib(gpu.total)}" + (" unified" if gpu.unified else ""),
                 f"{_gib(gpu.free)} free"]
        if gpu.compute:
            facts.append(gpu.compute if gpu.vendor != "nvidia" else f"compute {gpu.compute}")
        if gpu.driver:
            facts.append(f"driver {gpu.driver}")
        line = f"  gpu{gpu.index}: {gpu.name} ({', '.join(facts)})"
        if not gpu.usable:
            line += f" - not usable: {gpu.why_unusable}"
        lines.append(line)
    disk = machine.disk
    if disk.free is not None and disk.source == "assumed":
        lines.append(f"  disk: {_gib(disk.free)} free (assumed)")
    elif disk.free is not None:
        lines.append(f"  disk: {_gib(disk.free)} free in {short_path(disk.path)} "
                     f"({disk.described})")
    else:
        lines.append("  disk: unknown (" + ("remote server" if disk.source == "remote"
                                             else "not given") + ")")
    lines += [f"  note: {note}" for note in machine.notes]
    return lines


_HEADERS = ("model", "source", "size", "context", "memory", "where", "verdict", "tokens/s")


def _row(m: ModelReport) -> tuple[str, ...]:
    from provision.hardware import speed_range

    if m.fit is None or m.needs is None:
        return (m.name, "-", "-", "-", "-", "-", "unknown", "-")
    fit, needs = m.fit, m.needs
    size = human_bytes(needs.download if needs.download else (needs.disk_size or needs.weights))
    speed = speed_range(fit.tokens_per_second if fit.fits else None)
    verdict = str(fit.verdict) if m.meets or not fit.fits else f"{fit.verdict} (!)"
    return (m.name, needs.source, size, str(fit.settings.num_ctx), _gib(fit.total), fit.where,
            verdict, speed)


def _details(m: ModelReport) -> list[str]:
    if m.fit is None:
        return []
    fit, needs = m.fit, m.needs
    assert needs is not None
    compute = "compute" if fit.settings.engine == "llama-server" else "graph"
    lines = [f"  {m.name}: weights {_gib(fit.weights)} + KV cache {_gib(fit.kv_cache)} "
             f"({fit.settings.num_ctx} x {fit.settings.parallel}, {fit.settings.kv_type}) + "
             f"{compute} {_gib(fit.graph)}"
             + (f" + GPU minimum {_gib(fit.gpu_overhead)}" if fit.gpu_overhead else ""),
             f"    context from {fit.settings.num_ctx_source}"]
    if fit.placements:
        lines.append("    on GPU: " + ", ".join(f"gpu{p.gpu} {p.layers} layers {_gib(p.vram)}"
                                                  for p in fit.placements)
                     + f"; in RAM: {_gib(fit.ram)}")
    if fit.fits:
        room = [f"RAM {_gib(fit.headroom_ram)}"]
        if fit.headroom_vram is not None:
            room.insert(0, f"VRAM {_gib(fit.headroom_vram)}")
        if fit.headroom_disk is not None:
            room.append(f"disk {_gib(fit.headroom_disk)}")
        lines.append("    headroom: " + ", ".join(room))
    lines += [f"    does not fit: {r.message}" for r in fit.reasons]
    if m.would_fit:
        lines.append(f"    would run ({m.would_fit[1]}) with --num-ctx {m.would_fit[0]}")
    lines += [f"    would fit: {a.name} ({a.kind}; {a.fit.verdict}, {_gib(a.fit.total)})"
              for a in m.alternatives]
    if needs.source == "rough":
        lines.append(f"    {needs.detail}")
    lines += [f"    note: {note}" for note in fit.notes]
    return lines


def _render_plain(report: HardwareReport, out: Output) -> None:
    for line in machine_lines(report.machine):
        out.line(line)
    _server_line(report, out.line)
    if not report.models:
        return
    rows = [_HEADERS] + [_row(m) for m in report.models]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADERS))]
    out.line()
    for r in rows:
        out.line("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    for m in report.models:
        for line in _details(m):
            out.line(line)


def _server_line(report: HardwareReport, emit: Callable[[str], None]) -> None:
    server = report.server
    if server is None:
        emit(f"server: none asked; Ollama {report.version or 'newest'} defaults assumed")
    elif server.reachable:
        emit(f"server: Ollama {report.version or '?'} at {server.address.url}")
    else:
        emit(f"server: unreachable at {server.address.url}")


def _runs(m: ModelReport) -> str:
    """Where it would run, in one short cell: gpu, partial 20/41 (layers on the GPU), cpu,
    no-fit, unknown; `(!)` when that misses --require."""
    fit = m.fit
    if fit is None:
        return "unknown"
    text = f"partial {fit.layers_on_gpu}/{fit.layers_total}" if fit.verdict == "partial" \
        else str(fit.verdict)
    return text if m.meets or not fit.fits else f"{text} (!)"


def _render_rich(report: HardwareReport, out: Output) -> None:
    """The table fits the terminal: one row per model, never a cut name; below 100
    columns the source is a mark (`~`: a rough estimate) instead of a column."""
    # tens of ms: only for a terminal
    from rich.markup import escape
    from rich.table import Table

    from provision.output import wrap_line

    console = out.console
    width = console.width
    for i, line in enumerate(machine_lines(report.machine)):
        line = escape(wrap_line(line, width))
        console.print(f"[bold]{line}[/]" if i == 0 else line)
    _server_line(report, lambda text: console.print(escape(wrap_line(text, width))))
    if not report.models:
        return
    wide = width >= 100
    headers = ("model", *(("source",) if wide else ()), "size", "context", "memory", "runs",
               "tokens/s")
    table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
    for header in headers:
        table.add_column(header, style="bold" if header == "model" else None, no_wrap=True)
    colour = {"gpu": "green", "partial": "yellow", "cpu": "yellow", "no-fit": "red",
              "unknown": "red"}
    rough = False
    for m in report.models:
        name, source, size, context, memory, _, _, speed = _row(m)
        if not wide and source == "rough":
            size, rough = f"~{size}", True
        no_fit = m.fit is not None and not m.fit.fits
        tone = colour.get(m.verdict, "") if m.meets or no_fit else "red"
        cells = [name, *((source,) if wide else ()), size, context, memory]
        table.add_row(*(escape(c) for c in cells), f"[{tone}]{escape(_runs(m))}[/]",
                      escape(speed))
    console.print()
    console.print(table)
    if rough:
        console.print("  ~ a rough estimate (the registry was not read)", style="dim")
    for m in report.models:
        for line in _details(m):
            console.print(escape(wrap_line(line, width)), highlight=False)

"""Showing bundle transfers as they happen, as `pull` shows its downloads: a bar per
blob and a total per model on a terminal (redrawn at most 10 times a second), plain
lines in logs (a model's start, about every 10 s or 10 %, its end). Notices (retries,
resumes) and how each model ended become permanent lines.
"""

from __future__ import annotations

import time
from typing import IO, TYPE_CHECKING, Callable

from provision.bundle.events import (
    BlobProgress,
    BundleEvent,
    ModelFinished,
    ModelStarted,
    Notice,
    StepChanged,
)
from provision.live import LineLog, LiveView
from provision.models import progress
from provision.models.progress import BAR_WIDTH, bar_line, format_duration, progress_line
from provision.output import human_bytes

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

SPEED_TAU = 3.0  # seconds: time constant of the speed average


class _Model:
    """One model's transfer: the blob in flight and the sum over its blobs."""

    __slots__ = ("name", "action", "total", "moved", "blob", "blob_done", "blob_total",
                 "blob_start", "step", "step_t", "started", "speed", "sample_t",
                 "sample_moved",
                 "line_t", "line_moved", "decile", "blobs_moved")

    def __init__(self, name: str, action: str, total: int, now: float) -> None:
        self.name, self.action, self.total = name, action, total
        self.moved = 0  # bytes moved by this run, all blobs
        self.blobs_moved: dict[str, int] = {}
        self.blob, self.blob_done, self.blob_total, self.blob_start = "", 0, 0, 0
        self.step = ""
        self.started = self.sample_t = self.line_t = self.step_t = now
        self.speed = 0.0
        self.sample_moved = self.line_moved = 0
        self.decile = 0

    def progress(self, event: BlobProgress) -> None:
        moved = max(0, event.done - event.start)
        before = self.blobs_moved.get(event.digest, 0)
        if moved > before:
            self.blobs_moved[event.digest] = moved
            self.moved += moved - before
        self.blob, self.blob_total, self.blob_start = event.digest, event.total, event.start
        self.blob_done = max(self.blob_done if self.blob == event.digest else 0, event.done)

    def sample(self, now: float) -> None:
        dt = now - self.sample_t
        if dt < 0.05:
            return
        rate = (self.moved - self.sample_moved) / dt
        weight = 1.0 if self.speed == 0 else min(1.0, dt / SPEED_TAU)
        self.speed += weight * (rate - self.speed)
        self.sample_t, self.sample_moved = now, self.moved


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class PlainReporter(LineLog):
    """Lines for logs: a model's start, about every `interval` s or `step` of the way,
    slow steps, notices, the end."""

    def __init__(self, stream: IO[str], *, interval: float = 10.0, step: float = 0.10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(stream)
        self.interval = interval
        self.steps = max(1, round(1 / step))
        self.clock = clock
        self.models: dict[str, _Model] = {}

    def handle(self, event: BundleEvent) -> None:
        if type(event) is BlobProgress:
            model = self.models.get(event.model)
            if model is not None:
                model.progress(event)
                self._maybe_line(model)
        elif isinstance(event, ModelStarted):
            now = self.clock()
            self.models[event.model] = _Model(event.model, event.action, event.total, now)
            if event.total:
                label = f"{event.model}: " if event.model else ""
                self._write(f"{label}{event.action} {human_bytes(event.total)}")
        elif isinstance(event, StepChanged):
            if event.slow:
                self._write(f"{event.model}: {event.step}" if event.model else event.step)
        elif isinstance(event, Notice):
            self._write(f"{event.model}: {event.text}" if event.model else event.text)
        elif isinstance(event, ModelFinished):
            self.models.pop(event.model, None)
            self._write(f"{event.model}: {event.text}" if event.model else event.text)

    def _maybe_line(self, model: _Model) -> None:
        if model.total <= 0:
            return
        now = self.clock()
        decile = model.moved * self.steps // model.total
        if decile <= model.decile and now - model.line_t < self.interval:
            return
        dt = now - model.line_t
        speed = (model.moved - model.line_moved) / dt if dt > 0 else 0.0
        self._write(progress_line(model.name, model.moved, model.total, speed))
        model.decile = max(model.decile, decile)
        model.line_t, model.line_moved = now, model.moved


class TerminalReporter(LiveView):
    """Bars like `pull`'s: the blob in flight and the model's total, redrawn ≤ 10 times/s."""

    def __init__(self, console: Console, *, refresh_per_second: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.refresh_per_second = refresh_per_second
        self.clock = clock
        self.models: dict[str, _Model] = {}
        self.step = ""  # what the whole operation is doing, when no model is
        self.step_t = clock()

    def handle(self, event: BundleEvent) -> None:
        if type(event) is BlobProgress:
            model = self.models.get(event.model)
            if model is not None:
                model.progress(event)
        elif isinstance(event, ModelStarted):
            self.models[event.model] = _Model(event.model, event.action, event.total,
                                              self.clock())
        elif isinstance(event, StepChanged):
            if event.model and event.model in self.models:
                model = self.models[event.model]
                model.step, model.step_t = event.step, self.clock()
            else:
                self.step = f"{event.model}: {event.step}" if event.model else event.step
                self.step_t = self.clock()
        elif isinstance(event, Notice):
            self.say("[yellow]![/] ", f"{event.model}: {event.text}")
        elif isinstance(event, ModelFinished):
            self.models.pop(event.model, None)
            self.step = ""
            mark = "[green]✓[/] " if event.ok else "[red]✗[/] "
            self.say(mark, f"{event.model}: {event.text}" if event.model else event.text)

    def __rich__(self) -> RenderableType:
        from rich.console import Group  # tens of ms: only when a terminal is drawn
        from rich.text import Text  # tens of ms: only when a terminal is drawn

        now = self.clock()
        # label (14) + percent, sizes, speed and ETA (43 at most) + the bar: 80 columns
        width = max(8, min(BAR_WIDTH, self.console.width - 14 - 43))
        lines: list[Text] = []
        for model in list(self.models.values()):
            model.sample(now)
            head = Text(model.name or model.action, style="bold")
            head.append(f"  {model.step or model.action}{_elapsed(now - model.step_t)}",
                        style="dim")
            lines.append(head)
            in_flight = model.blob and model.blob_done < model.blob_total
            if in_flight:
                lines.append(Text(bar_line(f"  {_short(model.blob)}", model.blob_done,
                                           model.blob_total, model.speed, width=width)))
            # a total that is this one blob would say the same again
            if model.total and not (in_flight and model.total == model.blob_total
                                    and not model.blob_start):
                lines.append(Text(bar_line(f"  {'total':<12}", model.moved, model.total,
                                           model.speed, width=width), style="bold"))
        if not lines and self.step:
            lines.append(Text(self.step + _elapsed(now - self.step_t), style="dim"))
        return Group(*lines)


def _elapsed(seconds: float) -> str:
    """How long a step has run, once that is worth saying (the screen moves meanwhile)."""
    return f" ({format_duration(seconds)})" if seconds >= 2 else ""


def make_reporter(*, quiet: bool, terminal: bool, stream: IO[str],
                  console: Console | None = None) -> PlainReporter | TerminalReporter | None:
    """The reporter for this output: None when quiet."""
    return progress.make_reporter(quiet=quiet, terminal=terminal, stream=stream,
                                  console=console, kinds=(PlainReporter, TerminalReporter))

"""Showing transfers as they happen: bars on a terminal, plain periodic lines in CI logs.

Both reporters take the same events from provision.models.pull, for every transfer of
models: pulls, uploads from a bundle or the seed cache, downloads into them, a bundle
read back (the verb of each model's ModelStarted says which). Progress events can arrive
thousands of times a second, so handling one only updates counters; drawing happens
separately: rich's live display redraws at most `refresh_per_second` times (10), and
the plain reporter writes a line per model at most every `interval` seconds (10) or
`step` of the download (10 %). rich's live display prints nothing until it stops when
the output is not a terminal, which is why CI logs get the plain reporter.

Displayed byte counts never go backwards: Ollama subtracts a failed part's bytes when
it retries the part, but a bar that shrinks, a negative speed or an ETA that jumps
tells the user nothing; we show the furthest point reached, which the download passes
again shortly. Only an announced resume after a retry may move a bar back.
"""

from __future__ import annotations

import math
import threading
import time
from typing import IO, TYPE_CHECKING, Callable

from provision.live import LineLog, LiveView
from provision.models.pull import (
    PULLING,
    BlobProgress,
    ModelFinished,
    ModelStarted,
    Notice,
    PullEvent,
    PullOutcome,
    PullStatus,
    Resumed,
    Retrying,
    StatusChanged,
)
from provision.output import counted, fit, human_bytes

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

SPEED_TAU = 3.0  # seconds: time constant of the speed average (steady, yet follows change)
BAR_WIDTH = 25
ROW_MIN_BYTES = 1_000_000  # blobs this big get a row of their own on a terminal
FIGURES = 47  # columns a bar line's figures may take: percent, sizes, speed, time left


class _Blob:
    __slots__ = ("total", "done")

    def __init__(self, total: int, done: int = 0) -> None:
        self.total = total
        self.done = done  # furthest completed byte count seen


class _Model:
    """One model's progress summed over its blobs (blobs show up one after another)."""

    __slots__ = ("name", "action", "blobs", "total", "seen", "expected", "done", "status",
                 "note", "started",
                 "sample_t", "sample_done", "speed",
                 "line_t", "line_done", "next_at", "next_time", "decile")

    def __init__(self, name: str, now: float, expected: int = 0, action: str = PULLING) -> None:
        self.name = name
        self.action = action  # the verb: pulling, uploading, downloading, checking
        self.blobs: dict[str, _Blob] = {}
        self.seen = 0  # sum of the totals of the blobs seen so far
        self.expected = expected  # the manifest's size, when known up front
        self.total = expected  # what the model's bar counts to: the larger of the two
        self.done = 0
        self.status = "starting"
        self.note = ""
        self.started = now
        self.sample_t = now
        self.sample_done = 0
        self.speed = 0.0
        # the plain reporter's schedule
        self.line_t = now
        self.line_done = 0
        self.next_at = 0.0
        self.next_time = 0.0
        self.decile = 0


class _Tally:
    """Counters per model. The hot path takes no lock: one thread writes each model."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.models: dict[str, _Model] = {}
        self.lock = threading.Lock()  # guards adding/removing models and blobs

    def start(self, name: str, expected: int = 0, action: str = PULLING) -> _Model:
        with self.lock:
            model = self.models[name] = _Model(name, self.clock(), expected, action)
            return model

    def get(self, name: str) -> _Model:
        model = self.models.get(name)
        return model if model is not None else self.start(name)

    def progress(self, event: BlobProgress) -> _Model:
        model = self.models.get(event.model) or self.start(event.model)
        blob = model.blobs.get(event.digest)
        total = event.total
        if blob is None:
            # Where a blob starts when it first shows up is a baseline, never speed: what
            # the server has of it (a partial download from an earlier run, a blob
            # another model shares) or where an upload takes it up.
            start = min(max(event.start, event.completed, 0), total)
            with self.lock:
                blob = model.blobs[event.digest] = _Blob(total, start)
            model.seen += total
            model.total = max(model.expected, model.seen)
            model.done += start
            model.sample_done += start
            model.line_done += start
        elif blob.total != total:
            model.seen += total - blob.total
            model.total = max(model.expected, model.seen)
            blob.total = total
        completed = event.completed if event.completed < total else total
        if completed > blob.done:
            model.done += completed - blob.done
            blob.done = completed
        return model

    def resumed(self, event: Resumed) -> _Model:
        """An announced resume: the bar may move back to where the server continued."""
        model = self.get(event.model)
        blob = model.blobs.get(event.digest)
        if blob is not None and event.completed < blob.done:
            back = blob.done - event.completed
            blob.done -= back
            model.done -= back
            model.sample_done -= back
            model.line_done -= back
        return model

    def finish(self, name: str) -> _Model | None:
        with self.lock:
            return self.models.pop(name, None)

    def snapshot(self) -> list[tuple[_Model, list[tuple[str, _Blob]]]]:
        """Models and their blobs, copied under the lock (the render thread reads them)."""
        with self.lock:
            return [(m, list(m.blobs.items())) for m in self.models.values()]


def _smooth(old: float, rate: float, dt: float) -> float:
    if old <= 0:
        return rate
    alpha = 1.0 - math.exp(-dt / SPEED_TAU)
    return old + alpha * (rate - old)


def _sample(obj: _Model, now: float) -> None:
    """Fold the bytes since the last sample into the smoothed speed (never negative)."""
    dt = now - obj.sample_t
    if dt < 0.05:
        return
    rate = max(0, obj.done - obj.sample_done) / dt
    obj.speed = _smooth(obj.speed, rate, dt)
    obj.sample_t, obj.sample_done = now, obj.done


def format_duration(seconds: float) -> str:
    """Like the Ollama CLI: 45s, 3m20s, 1h5m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60}m"


def format_sizes(done: float, total: float) -> str:
    """`2.1/4.7 GB` when both share a unit, else `512 MB/4.7 GB`."""
    a, b = human_bytes(done), human_bytes(total)
    unit_a, unit_b = a.rsplit(" ", 1)[1], b.rsplit(" ", 1)[1]
    return f"{a.rsplit(' ', 1)[0]}/{b}" if unit_a == unit_b else f"{a}/{b}"


def bar_line(label: str, done: int, total: int, speed: float, *, width: int = BAR_WIDTH,
             finished: bool = False) -> str:
    """`pulling 6a0746a1ec1a  45% ▕████      ▏ 2.1/4.7 GB  85 MB/s  30s`"""
    fraction = done / total if total > 0 else 0.0
    filled = int(fraction * width)
    line = (f"{label} {int(fraction * 100):3d}% ▕{'█' * filled}{' ' * (width - filled)}▏ "
            f"{format_sizes(done, total)}")
    if not finished and done < total and speed > 0:
        line += f"  {human_bytes(speed)}/s  {format_duration((total - done) / speed)}"
    return line


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def _retry_text(event: Retrying) -> str:
    return (f"{event.error.message}; retry {event.retry}/{event.retries} in "
            f"{format_duration(event.delay) if event.delay >= 1 else f'{event.delay:.2g}s'}")


def _resume_text(event: Resumed, width: int = 1 << 16) -> str:
    blob = _short(event.digest)
    if event.completed <= 0:
        return fit(width, f"{event.model}: blob {blob} restarted from zero",
                   " (the server had no partial download)")
    pct = int(event.completed * 100 / event.total) if event.total else 0
    return fit(width, f"{event.model}: resumed at "
               f"{format_sizes(event.completed, event.total)} ({pct}%)", f" of blob {blob}",
               ", not restarted")


def _outcome_parts(outcome: PullOutcome) -> tuple[str, list[str]]:
    """A finished transfer in words: what it moved in how long, then the rest (speed,
    blobs the server had, retries, a resume), most telling first."""
    if outcome.via is not None:  # uploaded by this machine, not pulled by the server
        core = (f"{human_bytes(outcome.sent_bytes)} sent from {outcome.via} in "
                f"{format_duration(outcome.duration)}")
    else:
        core = f"{human_bytes(outcome.size)} in {format_duration(outcome.duration)}"
    extra = []
    moved = outcome.sent_bytes if outcome.via is not None else outcome.downloaded
    if moved and outcome.duration > 0:
        extra.append(f"{human_bytes(moved / outcome.duration)}/s")
    if outcome.blobs_skipped:
        extra.append(f"{counted(outcome.blobs_skipped, 'blob')} already there")
    if outcome.retries:
        extra.append(counted(outcome.retries, "retry", "retries"))
    if outcome.resumed:
        extra.append("resumed a partial download")
    return core, extra


def outcome_text(outcome: PullOutcome, *, verb: bool = True, width: int = 1 << 16) -> str:
    """One line about how a model's transfer ended (shared by reporters and the summary);
    `width`: the columns it may take (the less telling parts go first)."""
    if outcome.status == PullStatus.PRESENT:
        if outcome.stale:
            other = f"other weights than in {outcome.via}; --upgrade replaces them"
            return f"present with {other}" if verb else other
        return "already present"  # `--force` means another thing in `apply`: no hint here
    if outcome.status == PullStatus.INTERRUPTED:
        return "interrupted"  # how to resume is said once, at the end
    if outcome.status == PullStatus.FAILED:
        return outcome.error.message if outcome.error else outcome.status
    core, extra = _outcome_parts(outcome)
    if not verb:  # inside the summary's parentheses: no more of them
        return fit(width, core, *(f", {e}" for e in extra))
    verbs = {PullStatus.UPDATED: "updated", PullStatus.UNCHANGED: "pulled again, unchanged"}
    head = verbs.get(outcome.status, "pulled") + f": {core}"
    moved = outcome.sent_bytes if outcome.via is not None else outcome.downloaded
    if moved and outcome.duration > 0:
        head, extra = fit(width, head, f" ({extra[0]})"), extra[1:]
    return fit(width, head, *(f", {e}" for e in extra))


def finished_text(event: ModelFinished, width: int = 1 << 16) -> str:
    """How a model's transfer ended, one line: a pull's (or an upload's) outcome, or the
    event's own text."""
    return outcome_text(event.outcome, width=width) if event.outcome is not None \
        else event.text


def progress_line(name: str, done: int, total: int, speed: float) -> str:
    """`name: 45% (2.1/4.7 GB, 85.0 MB/s, 30s left)`: a log's periodic line."""
    text = f"{name}: {done * 100 // total}% ({format_sizes(done, total)}"
    if speed > 0 and done < total:
        text += f", {human_bytes(speed)}/s, {format_duration((total - done) / speed)} left"
    return text + ")"


class PlainReporter(LineLog):
    """Lines for logs: at start, about every `interval` s or `step` of the way, at the end."""

    say_failures = True  # False: the caller says why a model failed (apply's step line)

    def __init__(self, stream: IO[str], *, interval: float = 10.0, step: float = 0.10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(stream)
        self.interval = interval
        self.steps = max(1, round(1 / step))
        self.clock = clock
        self.tally = _Tally(clock)

    def handle(self, event: PullEvent) -> None:
        if type(event) is BlobProgress:
            model = self.tally.progress(event)
            now = self.clock()
            if model.done >= model.next_at or now >= model.next_time:
                self._line(model, now)
            return
        if isinstance(event, ModelStarted):
            model = self.tally.start(event.model, event.expected_size or 0, event.action)
            model.next_time = model.started + self.interval
            self._write(f"{event.action} {event.model}")
        elif isinstance(event, Notice):
            self._write(f"{event.model}: {event.text}" if event.model else event.text)
        elif isinstance(event, Retrying):
            self._write(f"{event.model}: {_retry_text(event)}")
        elif isinstance(event, Resumed):
            self.tally.resumed(event)
            self._write(_resume_text(event))
        elif isinstance(event, StatusChanged):
            if event.slow:  # a step that may take long: the log says it began
                self._write(f"{event.model}: {event.status}" if event.model else event.status)
            if event.model:
                self.tally.get(event.model).status = event.status
        elif isinstance(event, ModelFinished):
            self.tally.finish(event.model)
            if event.ok or self.say_failures:
                self._write(f"{event.model}: {finished_text(event)}" if event.model
                            else finished_text(event))

    def _line(self, model: _Model, now: float) -> None:
        if model.total <= 0:
            return
        decile = model.done * self.steps // model.total
        shown_before = model.decile * 100 // self.steps  # the least percent already shown
        if (decile <= model.decile and now < model.next_time) \
                or model.done * 100 // model.total < shown_before:
            # The total grew (a new blob): the byte threshold moved, and a percent below
            # one already shown would say the download went back.
            model.next_at = (model.decile + 1) * model.total / self.steps
            return
        dt = now - model.line_t
        speed = (model.done - model.line_done) / dt if dt > 0 else 0.0
        self._write(progress_line(model.name, model.done, model.total, speed))
        model.decile = max(model.decile, decile)
        model.next_at = (model.decile + 1) * model.total / self.steps
        model.next_time = now + self.interval
        model.line_t, model.line_done = now, model.done


class TerminalReporter(LiveView):
    """Bars like the Ollama CLI: one per blob and a total per model, redrawn ≤ 10 times/s
    (re-entrant: pull_models() enters it too).

    Finished models, retries and resumes become permanent lines above the live bars.
    """

    say_failures = True  # False: the caller says why a model failed (apply's step line)

    def __init__(self, console: Console, *, refresh_per_second: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.refresh_per_second = refresh_per_second
        self.clock = clock
        self.tally = _Tally(clock)
        self.step = ""  # what the whole operation is doing (shown while no model is)

    def handle(self, event: PullEvent) -> None:
        if type(event) is BlobProgress:
            self.tally.progress(event)
            return
        if isinstance(event, ModelStarted):
            self.tally.start(event.model, event.expected_size or 0,
                             event.action).status = "starting"
        elif isinstance(event, StatusChanged):
            if not event.model:
                self.step = event.status
                return
            model = self.tally.get(event.model)
            model.status, model.note = event.status, ""
        elif isinstance(event, Notice):
            self.say("[yellow]![/] ", f"{event.model}: {event.text}" if event.model
                     else event.text)
        elif isinstance(event, Retrying):
            self.tally.get(event.model).note = f"retry {event.retry}/{event.retries}"
            self.say(f"[yellow]![/] {event.model}: ", _retry_text(event))
        elif isinstance(event, Resumed):
            self.tally.resumed(event)
            self.say("[cyan]↻[/] ", _resume_text(event, self.console.width - 2))
        elif isinstance(event, ModelFinished):
            self._finished(event)

    def _finished(self, event: ModelFinished) -> None:
        name = event.model
        model = self.tally.finish(name)
        self.step = ""
        room = self.console.width - 2  # the line after its mark ("✓ ")
        if event.ok and event.shown_whole and model is not None and model.total:
            done = model.total
            speed = event.moved / event.duration if event.duration > 0 else 0
            tail = f"  {format_duration(event.duration)}"
            if speed:
                tail += f"  {human_bytes(speed)}/s"
            # The bar gets what the name and the figures leave of the line.
            bar = room - len(bar_line(name, done, model.total, 0, width=0, finished=True)
                             + tail)
            if bar >= 8:
                line = bar_line(name, done, model.total, 0, width=min(BAR_WIDTH, bar),
                                finished=True) + tail
            else:  # a long name: no bar, the line must not wrap
                line = f"{name}: {finished_text(event, room - len(name) - 2)}"
            self.say("[green]✓[/] ", line)
        elif event.ok:
            self.say("[green]✓[/] ", f"{name}: {finished_text(event)}")
        elif not self.say_failures:
            return
        elif event.interrupted:
            self.say("[yellow]![/] ", f"{name}: {finished_text(event)}")
        else:
            self.say("[red]✗[/] ", f"{name}: {finished_text(event)}")

    def __rich__(self) -> RenderableType:
        """One frame, built when the view redraws (not per event): a row per blob of
        1 MB or more (the small ones, template and parameters, pass too fast to read)
        and the model's total, which alone shows the speed and the time left."""
        from rich.console import Group  # tens of ms: only when a terminal is drawn
        from rich.text import Text  # tens of ms: only when a terminal is drawn

        now = self.clock()
        lines: list[Text] = []
        for model, blobs in self.tally.snapshot():
            _sample(model, now)
            moving = any(blob.done < blob.total for _, blob in blobs)
            busy = "downloading" if model.action == PULLING else model.action
            head = Text(model.name, style="bold")
            head.append(f"  {model.note or (busy if moving else model.status)}", style="dim")
            lines.append(head)
            verb = f"  {model.action} "
            label = len(verb) + 12  # "  pulling 02c22f0b3928", "  total" padded alike
            # Room for the bar once the label and the figures are drawn.
            width = max(8, min(BAR_WIDTH, self.console.width - label - FIGURES))
            total_row = len(blobs) > 1 or bool(model.expected)
            for digest, blob in blobs:
                if blob.total >= ROW_MIN_BYTES:
                    lines.append(Text(bar_line(f"{verb}{_short(digest)}", blob.done,
                                               blob.total, 0 if total_row else model.speed,
                                               width=width)))
            if total_row:
                lines.append(Text(bar_line(f"  {'total':<{label - 2}}", model.done,
                                           model.total, model.speed, width=width),
                                  style="bold"))
        if not lines and self.step:
            lines.append(Text(self.step, style="dim"))
        return Group(*lines)


def make_reporter(*, quiet: bool, terminal: bool, stream: IO[str],
                  console: Console | None = None) -> PlainReporter | TerminalReporter | None:
    """The reporter for this output: None when quiet."""
    if quiet:
        return None
    if terminal:
        if console is None:
            from rich.console import Console  # tens of ms: only when a terminal is drawn

            console = Console(file=stream, force_terminal=True, highlight=False)
        return TerminalReporter(console)
    return PlainReporter(stream)


__all__ = ["PlainReporter", "TerminalReporter", "finished_text", "make_reporter", "outcome_text",
           "bar_line", "format_duration", "format_sizes", "progress_line"]

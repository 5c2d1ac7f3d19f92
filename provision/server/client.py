"""One type owns the Ollama wire: `OllamaServer` (as codex-rs/ollama's client.rs does).

It holds the address, the timeouts and one httpx client made by `provision.http` (every
answer within its byte budget and its deadline, proxies as curl reads them), and turns
each endpoint into a method whose answer is parsed once (`api.py`). What does not change
within a run is asked once: the version, the model list (until this run pulls, creates
or deletes a model) and each model's `/api/show` (until that model changes). A request
without a usable answer raises `ServerError`: the server's own text, or what happened to
the connection.

Only a pull opens connections of its own, one per attempt (`pull_stream`, through the
same factory): its stall watchdog needs that socket, and a stream it cuts off must
never poison the shared pool.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from provision.errors import EXIT_UNREACHABLE, ProvisionError
from provision.http import (
    VERBOSE_SHOW,
    Timeouts,
    client,
    deadline,
    error_text,
    json_body,
    json_loads,
    proxy_for,
)
from provision.names import ModelName
from provision.output import printable
from provision.redact import in_text
from provision.server.address import ServerAddress
from provision.server.api import (
    Generation,
    Inventory,
    LoadedModel,
    ModelShow,
    parse_generation,
    parse_ps,
    parse_show,
    parse_tags,
)
from provision.server.diagnosis import OLLAMA_BANNER, diagnose, not_ollama
from provision.server.facts import ServerFacts

FIRST_ANSWER_S = 10.0  # the probe's deadline: /api/version (and `/`) together
# A pull stream has no total deadline and no read timeout that matters: its watchdog
# drops a stream without progress. This only bounds a hang where the socket could not
# be shut down.
PULL_READ_TIMEOUT = 3600.0
ModelKey = tuple[str, str, str, str]


class ServerError(ProvisionError):
    """A request without a usable answer. `reason`: the server's own error text, or what
    went wrong; `status`: the HTTP status it answered (None: no answer came)."""

    def __init__(self, request: str, reason: str, *, status: int | None = None,
                 retryable: bool = False, error_type: str = "",
                 connection: bool | None = None, message: str | None = None) -> None:
        super().__init__(message or f"{request} failed: {reason}", exit_code=EXIT_UNREACHABLE)
        self.request = request  # "GET /api/tags"
        self.reason = reason
        self.status = status
        self.retryable = retryable
        self.error_type = error_type  # the transport error's type, when no answer came
        # The request never got an answer (refused, dropped, timed out).
        self.connection = status is None if connection is None else connection


@dataclass(frozen=True)
class EndpointAnswer:
    """What the OpenAI-compatible endpoint a client uses answered to a tiny request."""

    path: str
    status: int
    object: str | None  # the JSON answer's `object` ("response", "chat.completion"...)
    content_type: str
    error: str  # the server's error text, when status is not 200


class OllamaServer:
    """An Ollama server, and this run's knowledge of it (safe to share between threads)."""

    def __init__(self, address: ServerAddress, *, timeouts: Timeouts = Timeouts(),
                 environ: Mapping[str, str] | None = None) -> None:
        self.address = address
        self.timeouts = timeouts
        self.environ = dict(os.environ if environ is None else environ)
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()
        self._facts: ServerFacts | None = None  # the last reachable probe's
        self._version: tuple[str | None] | None = None  # asked once; (None,): not said
        self._tags: Inventory | None = None
        self._shows: dict[tuple[ModelKey, bool], ModelShow | None] = {}

    @property
    def url(self) -> str:
        return self.address.url

    def _client(self, timeouts: Timeouts) -> httpx.Client:
        """Every connection to this server comes from here (the shared one, and a pull's)."""
        return client(self.address.url, loopback=self.address.is_loopback, timeouts=timeouts,
                      environ=self.environ)

    @property
    def http(self) -> httpx.Client:
        """The shared client, made at the first request: a proxy setting that cannot be
        used is an input error there, not when the server is named."""
        with self._lock:
            if self._http is None:
                self._http = self._client(self.timeouts)
            return self._http

    def close(self) -> None:
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def __enter__(self) -> OllamaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- is it Ollama? ----------------------------------------------------------------------

    def probe(self, *, seconds: float = FIRST_ANSWER_S) -> ServerFacts:
        """Is Ollama answering, which version? Asked again until it answers; then known
        for the rest of the run. `seconds`: the deadline for the first answer."""
        if self._facts is not None:
            return self._facts
        started = time.monotonic()
        proxy = None if self.address.is_loopback else proxy_for(self.url, self.environ)
        version, diagnosis = None, None
        try:
            with deadline(seconds, "the first answer"):
                # /api/version proves it is Ollama and gives the version in one request;
                # `/` (the "Ollama is running" banner) is asked only when that fails, to
                # tell an Ollama behind a path-rewriting proxy from another program.
                version, is_ollama = self._version_answer()
                if not is_ollama:
                    root = self.http.get("/")
                    if not (root.status_code == 200 and root.text.strip() == OLLAMA_BANNER):
                        diagnosis = not_ollama(root, self.address, proxy)
        except httpx.HTTPError as exc:
            diagnosis = diagnose(exc, self.address, proxy, self.environ,
                                 self.http.timeout.read)
            if diagnosis is None:
                raise
        facts = ServerFacts(self.address, version, diagnosis, time.monotonic() - started)
        if facts.reachable:
            self._facts = facts
            self._version = (version,)
        return facts

    def wait_until_up(self, seconds: float, *, probe_seconds: float = FIRST_ANSWER_S,
                      on_retry: Callable[[ServerFacts, float], None] | None = None
                      ) -> ServerFacts:
        """Probe until the server answers or `seconds` pass (backoff 0.25 s to 2 s)."""
        until = time.monotonic() + seconds
        delay = 0.25
        while True:
            facts = self.probe(seconds=probe_seconds)
            remaining = until - time.monotonic()
            if facts.reachable or remaining <= 0:
                return facts
            if on_retry:
                on_retry(facts, remaining)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)

    def version(self) -> str | None:
        """The server's version (None: it does not say one)."""
        if self._version is None:
            try:
                version, _ = self._version_answer()
            except httpx.HTTPError as exc:
                raise _failure("GET /api/version", exc) from exc
            self._version = (version,)
        return self._version[0]

    def _version_answer(self) -> tuple[str | None, bool]:
        """(version, is it Ollama's answer). Connection errors propagate: the probe
        diagnoses them."""
        response = self.http.get("/api/version")
        if response.status_code != 200:
            return None, False
        try:
            body = json_body(response)
        except ValueError:
            return None, False
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, str) or not version.strip():
            return None, False
        return printable(version.strip()[:64]), True  # shown in messages: one short line

    # --- what it has ----------------------------------------------------------------------

    def tags(self) -> Inventory:
        """The installed models (`/api/tags`)."""
        if self._tags is None:
            try:
                response = self.http.get("/api/tags")
                response.raise_for_status()
                inventory = parse_tags(json_body(response))
            except (httpx.HTTPError, ValueError) as exc:
                reason = _reason(exc)
                raise ServerError("GET /api/tags", reason, message="could not list the "
                                  f"server's models (GET /api/tags): {reason}") from exc
            self._tags = inventory
        return self._tags

    def show(self, name: ModelName, *, verbose: bool = False) -> ModelShow | None:
        """An installed model's details (`/api/show`); None when the server has no such
        model. `verbose` adds the whole tokenizer (a larger byte budget)."""
        key = (name.key, verbose)
        with self._lock:
            if key in self._shows:
                return self._shows[key]
        body: dict[str, Any] = {"model": name.short}
        if verbose:
            body["verbose"] = True
        response, payload = self._json("POST", "/api/show", body, extensions={
            "budget": VERBOSE_SHOW} if verbose else None, missing_ok=True)
        show = None if response.status_code == 404 else parse_show(name, payload)
        with self._lock:
            self._shows[key] = show
        return show

    def ps(self) -> tuple[LoadedModel, ...]:
        """The models loaded now, where (`/api/ps`)."""
        return parse_ps(self._json("GET", "/api/ps")[1])

    # --- using a model ----------------------------------------------------------------------

    def load(self, name: ModelName, *, options: Mapping[str, Any] | None = None,
             keep_alive: str | None = None) -> None:
        """Load a model into memory: a generation without a prompt."""
        body = _model_request(name, options, keep_alive)
        self._answer("POST", "/api/generate", {**body, "stream": False})

    def embed(self, name: ModelName, text: str, *, options: Mapping[str, Any] | None = None,
              keep_alive: str | None = None) -> None:
        """Embed `text` (which loads a model that only embeds)."""
        body = _model_request(name, options, keep_alive)
        self._answer("POST", "/api/embed", {**body, "input": text})

    def generate(self, name: ModelName, prompt: str, *,
                 options: Mapping[str, Any] | None = None,
                 keep_alive: str | None = None) -> Generation:
        body = {**_model_request(name, options, keep_alive), "prompt": prompt, "stream": False}
        _, payload = self._json("POST", "/api/generate", body)
        generation = parse_generation(payload)
        if generation is None:
            raise ServerError("POST /api/generate", "answered unreadable JSON", status=200)
        return generation

    def client_endpoint(self, model: ModelName, wire_api: str) -> EndpointAnswer:
        """A tiny request to the OpenAI-compatible endpoint a client will use:
        `/v1/responses`, or `/v1/chat/completions` for `wire_api` "chat"."""
        if wire_api == "responses":
            path = "/v1/responses"
            body: dict[str, Any] = {"model": model.short, "input": "ping",
                                    "max_output_tokens": 4}
        else:
            path = "/v1/chat/completions"
            body = {"model": model.short, "max_tokens": 4,
                    "messages": [{"role": "user", "content": "ping"}]}
        try:
            response = self.http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise _failure(f"POST {path}", exc) from exc
        content_type = response.headers.get("content-type", "?").split(";")[0][:60]
        if response.status_code != 200:
            return EndpointAnswer(path, response.status_code, None, content_type,
                                  error_text(response)[:200])
        try:
            answer = json_body(response)
        except (ValueError, httpx.HTTPError):
            answer = None
        kind = answer.get("object") if isinstance(answer, dict) else None
        return EndpointAnswer(path, 200, kind if isinstance(kind, str) else None,
                              content_type, "")

    # --- changing what it has -------------------------------------------------------------

    @contextlib.contextmanager
    def pull_stream(self, name: ModelName, *, insecure: bool, connect_timeout: float,
                    trace: Callable[[str, dict[str, Any]], None]
                    ) -> Iterator[httpx.Response]:
        """One attempt of `POST /api/pull`, its NDJSON stream unread, on a connection of
        its own (its socket reaches `trace`, for the stall watchdog)."""
        body = {"model": name.short, "insecure": insecure, "stream": True}
        try:
            with self._client(Timeouts(connect=connect_timeout, read=PULL_READ_TIMEOUT)) \
                    as http, http.stream("POST", "/api/pull", json=body,
                                         extensions={"trace": trace}) as response:
                yield response
        finally:
            self.forget(name)

    def create(self, name: ModelName, *, base: ModelName, system: str | None = None,
               template: str | None = None,
               parameters: Mapping[str, Any] | None = None) -> None:
        """Create (or replace) a model from another one (`/api/create`, streamed)."""
        body: dict[str, Any] = {"model": name.short, "from": base.short, "stream": True}
        if system is not None:
            body["system"] = system
        if template is not None:
            body["template"] = template
        if parameters:
            body["parameters"] = dict(parameters)
        try:
            with self.http.stream("POST", "/api/create", json=body) as stream:
                if stream.status_code != 200:
                    stream.read()
                    raise ServerError("POST /api/create", error_text(stream),
                                      status=stream.status_code)
                for line in stream.iter_lines():  # at most /api/create's budget in all
                    verdict = _create_verdict(line)
                    if verdict is True:
                        return
                    if isinstance(verdict, str):
                        raise ServerError("POST /api/create", verdict, status=200)
        except httpx.HTTPError as exc:
            raise ServerError("POST /api/create", str(exc), error_type=type(exc).__name__) \
                from exc
        finally:
            self.forget(name)
        raise ServerError("POST /api/create", "the create stream ended early", status=200)

    def create_from_files(self, name: ModelName, request: Mapping[str, Any], *,
                          timeout: float) -> None:
        """`/api/create` of blobs the server has, waited for (not streamed: a server that
        streams to a client that has gone, after Ctrl-C, stalls its create half way,
        holding a copy of the weights; unstreamed, it finishes whatever the client does).
        `timeout`: seconds the server may take."""
        body = {**request, "model": name.full, "stream": False}
        limits = self.http.timeout
        try:
            with self.http.stream("POST", "/api/create", json=body, timeout=httpx.Timeout(
                    limits.connect, read=timeout, write=limits.write, pool=limits.pool),
                    extensions={"deadline": (limits.connect or 0) + timeout}) as response:
                response.read()
        except httpx.HTTPError as exc:
            raise ServerError("POST /api/create", f"/api/create was cut off "
                              f"({type(exc).__name__})", error_type=type(exc).__name__) \
                from exc
        finally:
            self.forget(name)
        answer = _json_or_none(response)
        if response.status_code == 200 and isinstance(answer, dict) \
                and answer.get("status") == "success":
            return
        raise ServerError("POST /api/create", _error_of(answer) or
                          f"/api/create answered HTTP {response.status_code}",
                          status=response.status_code)

    def delete(self, name: ModelName) -> bool:
        """Remove a model; False when the server had no such model."""
        try:
            response = self.http.request("DELETE", "/api/delete", json={"model": name.short})
        except httpx.HTTPError as exc:
            raise _failure("DELETE /api/delete", exc) from exc
        finally:
            self.forget(name)
        if response.status_code in (200, 404):
            return response.status_code == 200
        raise ServerError("DELETE /api/delete", f"HTTP {response.status_code}",
                          status=response.status_code, retryable=response.status_code >= 500)

    def has_blob(self, digest: str) -> bool:
        """Does the server have this blob (`HEAD /api/blobs/<digest>`)?"""
        try:
            response = self.http.head(f"/api/blobs/{digest}")
        except httpx.HTTPError as exc:
            raise ServerError("HEAD /api/blobs", f"HEAD /api/blobs failed "
                              f"({type(exc).__name__})", retryable=True,
                              error_type=type(exc).__name__) from exc
        if response.status_code in (200, 404):
            return response.status_code == 200
        raise ServerError("HEAD /api/blobs", f"HEAD /api/blobs answered HTTP "
                          f"{response.status_code}", status=response.status_code,
                          retryable=response.status_code >= 500)

    def upload_blob(self, digest: str, size: int, chunks: Iterable[bytes]) -> None:
        """POST one blob from `chunks` (exactly `size` bytes; the server checks its
        digest). An exception raised by `chunks` (a corrupt bundle, Ctrl-C) aborts the
        request mid-body: the server drops what it got and stores nothing."""
        try:
            with self.http.stream("POST", f"/api/blobs/{digest}", content=iter(chunks),
                                  headers={"Content-Length": str(size),
                                           "Content-Type": "application/octet-stream"}
                                  ) as response:
                if response.status_code in (200, 201):
                    return
                response.read()
        except httpx.HTTPError as exc:
            raise ServerError("POST /api/blobs", f"the upload was cut off "
                              f"({type(exc).__name__}: {exc})", retryable=True,
                              error_type=type(exc).__name__) from exc
        text = error_text(response)
        raise ServerError("POST /api/blobs", text, status=response.status_code,
                          retryable=response.status_code >= 500
                          and "no space left" not in text.lower())

    def forget(self, name: ModelName | None = None) -> None:
        """What this run knows about the models list (and `name`'s details) may be
        stale: a model was pulled, created or deleted."""
        with self._lock:
            self._tags = None
            for key in [k for k in self._shows if name is None or k[0] == name.key]:
                del self._shows[key]

    # --- requests ---------------------------------------------------------------------

    def _answer(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                extensions: dict[str, Any] | None = None,
                missing_ok: bool = False) -> httpx.Response:
        """The response of a request with a short answer; ServerError unless it is 200
        (or a 404 with `missing_ok`)."""
        request = f"{method} {path}"
        try:
            response = self.http.request(method, path, json=body, extensions=extensions)
        except httpx.HTTPError as exc:
            raise _failure(request, exc) from exc
        if response.status_code == 200 or (missing_ok and response.status_code == 404):
            return response
        raise ServerError(request, error_text(response), status=response.status_code,
                          retryable=response.status_code >= 500)

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None, *,
              extensions: dict[str, Any] | None = None,
              missing_ok: bool = False) -> tuple[httpx.Response, Any]:
        """As `_answer`, and its body as JSON: an object (else a ServerError)."""
        response = self._answer(method, path, body, extensions=extensions,
                                missing_ok=missing_ok)
        if response.status_code == 404:
            return response, None
        try:
            payload = json_body(response)
        except ValueError as exc:
            raise ServerError(f"{method} {path}", f"answered unreadable JSON ({exc})",
                              status=200) from exc
        if not isinstance(payload, dict):
            raise ServerError(f"{method} {path}", f"answered {type(payload).__name__}, not "
                              "an object", status=200)
        return response, payload


def _model_request(name: ModelName, options: Mapping[str, Any] | None,
                   keep_alive: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": name.short}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    if options:
        body["options"] = dict(options)
    return body


def _create_verdict(line: str) -> bool | str | None:
    """A line of `/api/create`'s stream: True for success, the error text for an error,
    None for progress (or a garbage line, which is no verdict)."""
    try:
        event = json_loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    if "error" in event:
        return printable(str(event["error"])[:300])
    return True if event.get("status") == "success" else None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json_body(response)
    except (ValueError, httpx.HTTPError):
        return None


def _error_of(body: Any) -> str | None:
    return printable(str(body["error"])[:300]) \
        if isinstance(body, dict) and body.get("error") else None


def _reason(exc: Exception) -> str:
    return printable(in_text(str(exc)))[:300] or type(exc).__name__


def _failure(request: str, exc: httpx.HTTPError) -> ServerError:
    return ServerError(request, _reason(exc), retryable=True, error_type=type(exc).__name__)

"""The model registry (registry.ollama.ai or the host in a model's name), read directly.

Used before anything is downloaded: the manifest (what a pull would fetch, and how
big), the config blob (quantization, parameter size), and byte ranges of the weights
blob (the GGUF header). Handles the Docker-registry Bearer-token challenge.

`OLLAMA_PROVISION_REGISTRY` (a base URL) replaces the default registry: for mirrors,
air-gapped setups and this project's tests.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Protocol, TypeVar

import httpx

from provision.errors import EXIT_NOT_READY, ProvisionError, UsageError
from provision.http import Timeouts, client, deadline, json_body, json_loads
from provision.loopback import is_loopback_host
from provision.names import DEFAULT_HOST, ModelName
from provision.output import printable

T = TypeVar("T")

MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
WEIGHTS_MEDIA_TYPE = "application/vnd.ollama.image.model"
REGISTRY_ENV = "OLLAMA_PROVISION_REGISTRY"


class RegistryError(ProvisionError):
    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, exit_code=EXIT_NOT_READY, hint=hint)
        self.status = status


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str  # "sha256:<64 hex>"
    size: int


@dataclass(frozen=True)
class ModelManifest:
    name: ModelName
    config: Layer
    layers: tuple[Layer, ...]
    raw: bytes

    @property
    def total_size(self) -> int:
        """Bytes a pull downloads: every layer plus the config blob."""
        return self.config.size + sum(layer.size for layer in self.layers)

    @property
    def weights(self) -> Layer | None:
        return next((x for x in self.layers if x.media_type == WEIGHTS_MEDIA_TYPE), None)


@dataclass(frozen=True)
class ModelConfig:
    """The config blob: what `ollama show` calls details."""

    model_format: str
    model_family: str
    model_type: str  # parameter size, e.g. "8.0B"
    file_type: str  # quantization, e.g. "Q4_K_M"


class ModelFiles(Protocol):
    """Where a model's manifest and blobs are read from before anything moves (sizes, the
    config, a GGUF header): the registry (`RegistryClient`), or a store of models on
    this machine (a bundle, `provision.bundle.StoreFiles`)."""

    requests: int  # requests made (a store: 0)
    bytes_read: int

    def manifest(self, name: ModelName) -> ModelManifest: ...

    def blob(self, name: ModelName, digest: str, *, start: int = 0,
             end: int | None = None) -> bytes: ...

    def config(self, manifest: ModelManifest) -> ModelConfig: ...

    def close(self) -> None: ...


class SkipUnreachable:
    """ModelFiles that stop asking a registry host which did not answer at all (refused,
    timed out, its deadline passed): the same error at once for every later model of the
    run. A slow, unreachable registry otherwise costs its whole deadline (30 s) per
    model: five `choose` candidates, two and a half minutes. `down` may be shared by
    several wrappers (the steps of one `apply`). An answer, even an error, is not that."""

    def __init__(self, files: ModelFiles, down: dict[str, RegistryError] | None = None
                 ) -> None:
        self.files = files
        self.down = {} if down is None else down

    @property
    def requests(self) -> int:
        return self.files.requests

    @property
    def bytes_read(self) -> int:
        return self.files.bytes_read

    def manifest(self, name: ModelName) -> ModelManifest:
        return self._ask(name, lambda: self.files.manifest(name))

    def blob(self, name: ModelName, digest: str, *, start: int = 0,
             end: int | None = None) -> bytes:
        return self._ask(name, lambda: self.files.blob(name, digest, start=start, end=end))

    def config(self, manifest: ModelManifest) -> ModelConfig:
        return self._ask(manifest.name, lambda: self.files.config(manifest))

    def close(self) -> None:
        self.files.close()

    def _ask(self, name: ModelName, ask: Callable[[], T]) -> T:
        host = name.host.lower()
        if host in self.down:
            raise self.down[host]
        try:
            return ask()
        except RegistryError as exc:
            if isinstance(exc.__cause__, httpx.TransportError):  # no answer at all
                self.down[host] = exc
            raise


def registry_base_url(name: ModelName, *, insecure: bool = False,
                      environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    mirror = env.get(REGISTRY_ENV, "").strip()
    if name.host.lower() == DEFAULT_HOST and mirror:
        scheme, sep, rest = mirror.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
            raise UsageError(f"{REGISTRY_ENV}={printable(mirror[:80])} is not a registry URL",
                             hint="give one like https://registry.example.com or "
                             "http://127.0.0.1:5000 (a plain-HTTP mirror)")
        return mirror.rstrip("/")
    scheme = "http" if insecure else "https"
    return f"{scheme}://{name.host}"


class RegistryClient:
    """One registry session: remembers Bearer tokens per repository scope."""

    def __init__(self, *, insecure: bool = False, environ: dict[str, str] | None = None,
                 timeouts: Timeouts = Timeouts(connect=5.0, read=30.0, total=30.0)) -> None:
        self.insecure = insecure
        self.environ = dict(os.environ if environ is None else environ)
        self.timeouts = timeouts
        self.requests = 0  # HTTP requests made (benchmarks report it)
        self.bytes_read = 0  # body bytes received
        self._clients: dict[str, httpx.Client] = {}
        self._tokens: dict[str, str] = {}

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for http in self._clients.values():
            http.close()
        self._clients.clear()

    def _client(self, base: str) -> httpx.Client:
        if base not in self._clients:
            host = base.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
            self._clients[base] = client(base, loopback=is_loopback_host(host),
                                         timeouts=self.timeouts, environ=self.environ)
        return self._clients[base]

    def _get(self, name: ModelName, path: str, headers: dict[str, str], *,
             take: int | None = None, skip: int = 0) -> tuple[httpx.Response, bytes]:
        """The answer and its body (within the endpoint's budget), all under one deadline,
        redirects included. `take`: only that many bytes after `skip`, then hang up: a
        registry that ignores Range (200, the whole blob from byte 0) is not read further."""
        extensions = {} if take is None else {"budget": skip + take}
        with deadline(self.timeouts.total, "one registry request"):
            response = self._send(name, path, headers, stream=True, extensions=extensions)
            try:
                if take is None or response.status_code not in (200, 206):
                    body = _read_all(response, name)
                else:
                    body = _read_range(response, name, take,
                                       skip if response.status_code == 200 else 0)
            finally:
                response.close()
        self.bytes_read += len(body)
        return response, body

    def _send(self, name: ModelName, path: str, headers: dict[str, str], *,
              stream: bool = False, extensions: dict[str, Any] | None = None
              ) -> httpx.Response:
        """GET with the Bearer-token challenge answered; `stream`: the body is left unread
        (the caller reads and closes it)."""
        base = registry_base_url(name, insecure=self.insecure, environ=self.environ)
        http = self._client(base)
        scope = f"repository:{name.repository}:pull"
        for attempt in range(2):
            sent = dict(headers)
            if scope in self._tokens:
                sent["Authorization"] = f"Bearer {self._tokens[scope]}"
            try:
                # Redirects (to a CDN) are followed; httpx drops Authorization when the
                # host changes, so the token never reaches the blob store.
                response = http.send(http.build_request("GET", path, headers=sent,
                                                        extensions=extensions),
                                     stream=stream, follow_redirects=True)
            except httpx.HTTPError as exc:
                raise RegistryError(
                    f"cannot reach the registry {base} for {name.short}: {exc}",
                    hint="--insecure uses plain HTTP for a self-hosted registry"
                    if not self.insecure and "SSL" in str(exc) else None,
                ) from exc
            self.requests += 1
            if not stream:
                self.bytes_read += len(response.content)
            if response.status_code == 401 and attempt == 0:
                challenge = response.headers.get("www-authenticate", "")
                if challenge.lower().startswith("bearer"):
                    response.close()
                    self._tokens[scope] = self._fetch_token(http, challenge, scope)
                    continue
            return response
        return response

    @contextlib.contextmanager
    def stream_blob(self, name: ModelName, digest: str, *,
                    start: int = 0) -> Iterator[httpx.Response]:
        """A blob from byte `start`, its body unread: 206, or 200 from a registry that
        ignores Range (then the first `start` bytes are the caller's to skip). The caller
        counts what it reads in `bytes_read`."""
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        # A whole blob (GBs): no byte budget and no fixed deadline here; the caller bounds
        # the transfer by its size (bundle's Pace) and every read by the read timeout.
        response = self._send(name, f"/v2/{name.repository}/blobs/{digest}", headers,
                              stream=True, extensions={"budget": None, "deadline": None})
        try:
            yield response
        finally:
            response.close()

    def _fetch_token(self, http: httpx.Client, challenge: str, scope: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge[:4096]))
        realm = params.pop("realm", None)
        if not realm:
            raise RegistryError("registry sent an unusable auth challenge: "
                                f"{printable(challenge[:200])}")
        params.setdefault("scope", scope)
        try:
            with deadline(self.timeouts.total, "one registry request"):
                response = http.get(realm, params=params)
        except (httpx.HTTPError, ValueError) as exc:  # ValueError: a realm that is no URL
            raise RegistryError(f"registry token request failed: {exc}") from exc
        self.requests += 1
        self.bytes_read += len(response.content)
        try:
            body = json_body(response)
            token = body.get("token") or body["access_token"]
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise RegistryError(
                f"registry token request failed (HTTP {response.status_code})",
                status=response.status_code,
            ) from exc
        if not isinstance(token, str) or not token or len(token) > 64 * 1024:
            raise RegistryError("registry token request answered no usable token",
                                status=response.status_code)
        return token

    def manifest(self, name: ModelName) -> ModelManifest:
        response, content = self._get(name, f"/v2/{name.repository}/manifests/{name.tag}",
                                      {"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            asked = registry_base_url(name, insecure=self.insecure,
                                      environ=self.environ).split("://", 1)[1]
            raise RegistryError(
                f"{name.short} is not in the registry ({asked}): check the model name "
                "and tag",
                status=404,
                hint=f"available tags: https://ollama.com/library/{name.model}/tags"
                if name.host.lower() == DEFAULT_HOST else None,
            )
        if response.status_code != 200:
            raise RegistryError(
                f"registry answered HTTP {response.status_code} for {name.short}",
                status=response.status_code,
            )
        manifest = parse_manifest(name, content)
        if manifest is None:
            raise RegistryError(f"registry sent an unreadable manifest for {name.short}")
        return manifest

    def blob(self, name: ModelName, digest: str, *, start: int = 0,
             end: int | None = None) -> bytes:
        """Bytes [start, end] (inclusive) of a blob; the whole blob when end is None and start 0
        (within the blob budget of provision.http). Ranges are streamed: from a registry that
        ignores Range (200, the whole blob) only the bytes up to `end` are read."""
        headers: dict[str, str] = {}
        take = None
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
            take = None if end is None else end - start + 1
        response, content = self._get(name, f"/v2/{name.repository}/blobs/{digest}", headers,
                                      take=take, skip=start)
        if response.status_code not in (200, 206):
            raise RegistryError(
                f"registry answered HTTP {response.status_code} for blob {digest[:19]} "
                f"of {name.short}",
                status=response.status_code,
            )
        return content

    def config(self, manifest: ModelManifest) -> ModelConfig:
        return parse_config(manifest, self.blob(manifest.name, manifest.config.digest))


def parse_config(manifest: ModelManifest, raw: bytes) -> ModelConfig:
    """The config blob's details; RegistryError when it is not one."""
    try:
        data = json_loads(raw)
    except ValueError as exc:
        raise RegistryError(f"unreadable config blob for {manifest.name.short}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"unreadable config blob for {manifest.name.short}")
    return ModelConfig(
        model_format=_field(data, "model_format"),
        model_family=_field(data, "model_family"),
        model_type=_field(data, "model_type"),
        file_type=_field(data, "file_type"),
    )


def _read_all(response: httpx.Response, name: ModelName) -> bytes:
    try:
        return response.read()
    except httpx.HTTPError as exc:
        raise RegistryError(f"cannot read the registry's answer for {name.short}: {exc}") \
            from exc


def _read_range(response: httpx.Response, name: ModelName, take: int, skip: int) -> bytes:
    """`take` bytes after `skip`; the rest of the body is never read."""
    parts: list[bytes] = []
    got = 0
    try:
        for chunk in response.iter_bytes():
            if skip:
                cut = min(skip, len(chunk))
                chunk, skip = chunk[cut:], skip - cut
            parts.append(chunk[: take - got])
            got += len(parts[-1])
            if got >= take:
                break
    except httpx.HTTPError as exc:
        raise RegistryError(f"cannot read the registry's answer for {name.short}: {exc}") \
            from exc
    return b"".join(parts)


def parse_manifest(name: ModelName, raw: bytes) -> ModelManifest | None:
    """A manifest from its bytes (the registry's, a models folder's, a bundle's); None
    when they are not one (invalid JSON, nesting too deep, layers of the wrong types)."""
    try:
        data = json_loads(raw)
        layers = tuple(_layer(x) for x in data["layers"])
        return ModelManifest(name=name, config=_layer(data["config"]), layers=layers, raw=raw)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _field(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return value[:200] if isinstance(value, str) else ""


def _layer(data: Any) -> Layer:
    size = data["size"]
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 1 << 62:
        raise ValueError(f"layer size {size!r}")
    digest = data["digest"]
    if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", digest):
        raise ValueError("layer digest")
    media_type = data.get("mediaType", "")
    return Layer(media_type=media_type if isinstance(media_type, str) else "", digest=digest,
                 size=size)

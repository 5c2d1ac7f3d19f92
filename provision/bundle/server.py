"""The Ollama server's side of provisioning from a bundle: one type owns the wire.

`HEAD /api/blobs/<digest>` (does it have a blob), `POST /api/blobs/<digest>` (upload one,
streamed with its exact length: the server checks the digest), `POST /api/create`
(make the model of blobs it has), `/api/show` and `/api/tags` (what it has now),
`DELETE /api/delete`. Every answer is read with a byte cap; every request has timeouts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provision.http import Timeouts, client

if TYPE_CHECKING:
    import httpx

    from provision.host import ServerAddress
    from provision.names import ModelName

MAX_JSON = 8 << 20  # /api/show with a long licence is tens of KiB; a body past this is not one


class ServerRefused(Exception):
    """The server answered an error (its own text in `text`) or the connection failed."""

    def __init__(self, text: str, *, status: int | None = None, retryable: bool = False,
                 connection: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.status = status
        self.retryable = retryable
        self.connection = connection  # the request never got an answer


@dataclass(frozen=True)
class InstalledModel:
    weights: str | None  # sha256:<hex> named by the modelfile's FROM line
    show: dict[str, Any]


class ModelServer:
    def __init__(self, address: ServerAddress, *, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0) -> None:
        self.address = address
        self.http: httpx.Client = client(
            address.url, loopback=address.is_loopback,
            timeouts=Timeouts(connect=connect_timeout, read=read_timeout, write=read_timeout))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what it has ------------------------------------------------------------------

    def model(self, name: ModelName) -> InstalledModel | None:
        """The installed model by that name, or None."""
        from provision.drift import weights_digest

        status, body = self._json("POST", "/api/show", {"model": name.full})
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise ServerRefused(_error_of(body) or f"/api/show answered HTTP {status}",
                                status=status, retryable=status >= 500)
        return InstalledModel(weights=weights_digest(str(body.get("modelfile") or "")),
                              show=body)

    def manifest_digest(self, name: ModelName) -> str | None:
        """`sha256:<hex>` of the model's manifest, as `/api/tags` lists it."""
        from provision.inventory import parse_tags

        status, body = self._json("GET", "/api/tags", None)
        if status != 200:
            return None
        found = parse_tags(body).find(name)
        return f"sha256:{found.digest}" if found is not None and found.digest else None

    def version(self) -> str | None:
        status, body = self._json("GET", "/api/version", None)
        return str(body.get("version")) if status == 200 and isinstance(body, dict) else None

    def has_blob(self, digest: str) -> bool:
        import httpx

        try:
            response = self.http.head(f"/api/blobs/{digest}")
        except httpx.HTTPError as exc:
            raise ServerRefused(f"HEAD /api/blobs failed ({type(exc).__name__})",
                                retryable=True, connection=True) from exc
        if response.status_code in (200, 404):
            return response.status_code == 200
        raise ServerRefused(f"HEAD /api/blobs answered HTTP {response.status_code}",
                            status=response.status_code, retryable=response.status_code >= 500)

    # --- what it is asked to do -------------------------------------------------------

    def upload_blob(self, digest: str, size: int, chunks: Iterable[bytes]) -> None:
        """POST one blob from `chunks` (exactly `size` bytes). An exception raised by
        `chunks` (a corrupt bundle, Ctrl-C) aborts the request mid-body: the server drops
        what it got and stores nothing."""
        import httpx

        try:
            with self.http.stream("POST", f"/api/blobs/{digest}", content=iter(chunks),
                                  headers={"Content-Length": str(size),
                                           "Content-Type": "application/octet-stream"}
                                  ) as response:
                if response.status_code in (200, 201):
                    return
                body = _read_capped(response, MAX_JSON)
        except httpx.HTTPError as exc:
            raise ServerRefused(f"the upload was cut off ({type(exc).__name__}: {exc})",
                                retryable=True, connection=True) from exc
        text = _error_of(_loads(body)) or body.decode(errors="replace").strip()[:200]
        raise ServerRefused(text or f"HTTP {response.status_code}",
                            status=response.status_code,
                            retryable=response.status_code >= 500
                            and "no space left" not in text.lower())

    def create(self, name: ModelName, request: dict[str, Any], *, timeout: float) -> None:
        """POST /api/create and wait for its verdict. Not streamed: a server that streams
        to a client that has gone (Ctrl-C) stalls its create half way, holding a temporary
        copy of the weights; unstreamed, it finishes whatever happens to the client."""
        import httpx

        body = {**request, "model": name.full, "stream": False}
        limits = self.http.timeout
        try:
            with self.http.stream("POST", "/api/create", json=body, timeout=httpx.Timeout(
                    limits.connect, read=timeout, write=limits.write, pool=limits.pool),
                                  extensions={"deadline": (limits.connect or 0) + timeout}
                                  ) as response:
                answer = _loads(_read_capped(response, MAX_JSON))
        except httpx.HTTPError as exc:
            raise ServerRefused(f"/api/create was cut off ({type(exc).__name__})",
                                connection=True) from exc
        if response.status_code == 200 and isinstance(answer, dict) \
                and answer.get("status") == "success":
            return
        raise ServerRefused(_error_of(answer) or
                            f"/api/create answered HTTP {response.status_code}",
                            status=response.status_code)

    def delete(self, name: ModelName) -> None:
        self._json("DELETE", "/api/delete", {"model": name.full})

    # --- bounded reading --------------------------------------------------------------

    def _json(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        import httpx

        try:
            with self.http.stream(method, path, json=body) as response:
                return response.status_code, _loads(_read_capped(response, MAX_JSON))
        except httpx.HTTPError as exc:
            raise ServerRefused(f"{path} failed ({type(exc).__name__}: {exc})",
                                retryable=True, connection=True) from exc


def _read_capped(response: httpx.Response, limit: int) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > limit:
            raise ServerRefused(f"the server sent more than {limit:,} bytes where a short "
                                "answer was due")
    return bytes(data)


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _error_of(body: Any) -> str | None:
    return str(body["error"]) if isinstance(body, dict) and body.get("error") else None

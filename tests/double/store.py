"""The models a double has installed and the blobs it keeps: catalog lookups,
lazy materialisation, pruning, capabilities, and `/api/show`'s answer."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.double.blobs import MT_LICENSE, MT_SYSTEM, MT_TEMPLATE, Blob
from tests.double.catalog import CatalogModel
from tests.double.names import ModelName, parse_name
from tests.double.state import DoubleState, Installed
from tests.double.wire import go_v, rfc3339

BLOBS_DIR = "/root/.ollama/models/blobs"


class ModelStore(DoubleState):
    """The catalog, the installed models (materialised lazily) and the blobs kept."""

    def add_model(self, model: CatalogModel, installed: bool = False) -> CatalogModel:
        """Make the registry of this server serve `model` (and install it)."""
        with self._lock:
            self._catalog[model.key] = model
        if installed:
            self.install(model.name)
        return model

    def catalog_model(self, name: str) -> CatalogModel:
        model = self._catalog.get(parse_name(name).key)
        if model is None:
            raise KeyError(f"{name} is not in this server's catalog")
        return model

    def update_model(self, name: str) -> str:
        """The registry now serves a new version of this tag (new weights digest). Returns
        the new weights digest; an installed copy keeps the old one until pulled again."""
        model = self.catalog_model(name)
        with self._lock:
            self._revisions[model.key] = self._revisions.get(model.key, 0) + 1
            revision = self._revisions[model.key]
        return model.artifacts(revision).weights.digest

    def manifest(self, name: str) -> dict[str, Any]:
        """The manifest the registry serves now for `name` (a dict)."""
        model = self.catalog_model(name)
        return json.loads(model.artifacts(self._revisions.get(model.key, 0)).manifest)

    def install(self, name: str, modified_ns: int | None = None) -> None:
        """Put a catalog model on the server as if pulled (lazily materialised)."""
        parsed = parse_name(name)
        model = self._catalog.get(parsed.key)
        if model is None:
            raise ValueError(f"{name!r} is not in the catalog of this test server")
        with self._lock:
            self._models[parsed.key] = Installed(
                name=model.model_name, source=model,
                revision=self._revisions.get(model.key, 0),
                modified_ns=modified_ns or time.time_ns())

    def remove(self, name: str) -> bool:
        """Delete an installed model (and its blobs no other model uses)."""
        key = parse_name(name).key
        with self._lock:
            self._materialize_all()
            inst = self._models.pop(key, None)
            if inst is None:
                return False
            self._loaded.pop(key, None)
            digests = {b.digest for b in inst.layers or []}
            if inst.config is not None:
                digests.add(inst.config.digest)
            self._prune(digests)
            return True

    def installed_names(self) -> list[str]:
        """Short names of the installed models, newest first (as /api/tags lists them)."""
        with self._lock:
            models = sorted(self._models.values(), key=lambda m: m.modified_ns, reverse=True)
            return [m.name.short for m in models]

    # ---- internals: models and blobs ---------------------------------------------------------
    def _materialize(self, inst: Installed) -> None:
        if inst.layers is not None:
            return
        arts = inst.source.artifacts(inst.revision)
        inst.layers, inst.config = list(arts.layers), arts.config
        inst.manifest, inst.digest = arts.manifest, arts.digest
        for blob in [*arts.layers, arts.config]:
            self._present.add(blob.digest)
            self._local[blob.digest] = blob

    def _materialize_all(self) -> None:
        with self._lock:
            for inst in list(self._models.values()):
                self._materialize(inst)

    def _installed_sorted(self) -> list[Installed]:
        with self._lock:
            self._materialize_all()
            return sorted(self._models.values(), key=lambda m: m.modified_ns, reverse=True)

    def _get_installed(self, name: ModelName) -> Installed | None:
        with self._lock:
            inst = self._models.get(name.key)
            if inst is not None:
                self._materialize(inst)
            return inst

    def _caps(self, inst: Installed) -> list[str]:
        model = inst.source
        if model.capabilities is not None or model.is_embedding:
            return model.caps()
        template = inst.layer_text(MT_TEMPLATE)
        caps = ["completion"]
        if ".Tools" in template:
            caps.append("tools")
        if ".Thinking" in template or ".Think" in template:
            caps.append("thinking")
        return caps

    def _has_blob(self, digest: str) -> bool:
        with self._lock:
            return digest in self._present

    def _store_blob(self, blob: Blob) -> None:
        with self._lock:
            self._present.add(blob.digest)
            self._local[blob.digest] = blob

    def _find_blob(self, digest: str) -> Blob | None:
        with self._lock:
            return self._registry_index.get(digest) or self._local.get(digest)

    def _prune(self, candidates: set[str]) -> set[str]:
        """Remove blobs in `candidates` that no installed model uses; return them."""
        used: set[str] = set()
        for m in self._models.values():
            self._materialize(m)
            used |= {b.digest for b in [*(m.layers or []), *([m.config] if m.config else [])]}
        removed = candidates - used
        self._present -= removed
        for digest in removed:
            self._local.pop(digest, None)
        return removed

    # ---- internals: show ---------------------------------------------------------------------
    def _show(self, inst: Installed, verbose: bool) -> dict[str, Any]:
        model = inst.source
        template = inst.layer_text(MT_TEMPLATE) or "{{ .Prompt }}"
        system = inst.layer_text(MT_SYSTEM)
        assert inst.layers is not None
        licenses = [b.text() for b in inst.layers if b.media_type == MT_LICENSE]
        params = inst.params()
        lines = ['# Modelfile generated by "ollama show"',
                 "# To build a new Modelfile based on this, replace FROM with:",
                 f"# FROM {inst.name.short}", "",
                 f"FROM {BLOBS_DIR}/sha256-{inst.weights.hex}",
                 f"TEMPLATE {modelfile_quote(template)}"]
        if system:
            lines.append(f"SYSTEM {modelfile_quote(system)}")
        param_lines = []
        for key in sorted(params):
            values = params[key] if isinstance(params[key], list) else [params[key]]
            for value in values:
                lines.append(f"PARAMETER {key} {go_v(value)}")
                shown = json.dumps(value) if isinstance(value, str) else go_v(value)
                param_lines.append(f"{key:<30} {shown}")
        lines += [f"LICENSE {modelfile_quote(text)}" for text in licenses]
        resp: dict[str, Any] = {}
        if licenses:
            resp["license"] = "\n".join(licenses)
        resp["modelfile"] = "\n".join(lines) + "\n"
        if param_lines:
            resp["parameters"] = "\n".join(param_lines)
        resp["template"] = template
        if system:
            resp["system"] = system
        resp["details"] = inst.details(parent=True)
        info = model.model_info(inst.revision, verbose=verbose)
        if self.llama_server:  # 0.30+ lists it although the file may not have it
            info = dict(sorted({**info, "general.quantization_version": 2}.items()))
        resp["model_info"] = info
        resp["tensors"] = [{"name": n, "type": t, "shape": list(s)} for n, s, t in model.tensors]
        resp["capabilities"] = self._caps(inst)
        resp["modified_at"] = rfc3339(inst.modified_ns)
        return resp


def modelfile_quote(text: str) -> str:
    """Ollama's Modelfile quoting: multi-line or padded values in quotes."""
    if "\n" in text or text.startswith(" ") or text.endswith(" "):
        return f'"""{text}"""' if '"' in text else f'"{text}"'
    return text

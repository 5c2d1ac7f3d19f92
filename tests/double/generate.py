"""`/api/generate`, `/api/chat`, `/api/embed`, `/api/embeddings`: load, unload, token
streams with realistic durations (virtual time from tokens per second), embeddings."""

from __future__ import annotations

import json
import math
import time
import zlib
from typing import Any

from tests.double.faults import DEFAULT_GARBAGE
from tests.double.names import InvalidName, ModelName, parse_name
from tests.double.state import Installed, Loaded
from tests.double.transport import ApiError, BaseHandler, Stopping
from tests.double.wire import F32, parse_keep_alive, rfc3339, sha256_hex

_WORDS = ("The", " sky", " is", " blue", " because", " molecules", " in", " the", " air",
          " scatter", " blue", " light", " from", " the", " sun", " more", " than", " red",
          " light", ".")


class RunRoutes(BaseHandler):
    """`/api/generate`, `/api/chat`, `/api/embed`, `/api/embeddings`."""

    def _model_for_run(self, req: dict[str, Any], *,
                       embed: bool = False) -> tuple[str, Installed]:
        raw = req.get("model") or ""
        if not raw:
            raise ApiError(400, "model is required")
        try:
            name = parse_name(raw)
        except InvalidName:
            raise ApiError(404, f"model '{raw}' not found") from None
        inst = self.d._get_installed(name)
        if inst is None and self.d.llama_server:  # the texts of a real 0.32.15
            raise ApiError(404, f"model {json.dumps(raw)} not found, try pulling it first"
                            if embed else f"model '{raw}' not found")
        if inst is None:
            raise ApiError(404, f"model '{raw}' not found, try pulling it first")
        return raw, inst

    def api_generate(self) -> None:
        d = self.d
        req = self._json()
        raw, inst = self._model_for_run(req)
        prompt = req.get("prompt") or ""
        keep_alive = parse_keep_alive(req.get("keep_alive"))
        if not prompt and not req.get("images") and keep_alive == 0:
            d._unload(inst)
            self.send_json(200, {"model": raw, "created_at": rfc3339(time.time_ns()),
                                 "response": "", "done": True, "done_reason": "unload"})
            return
        if "completion" not in d._caps(inst):
            raise ApiError(400, f'"{raw}" does not support generate')
        loaded, load_ns = d._load(inst, req.get("options") or {}, req.get("keep_alive"))
        if not prompt:
            self.send_json(200, {"model": raw, "created_at": rfc3339(time.time_ns()),
                                 "response": "", "done": True, "done_reason": "load"})
            return
        self._generate_stream(raw, req, loaded, load_ns, prompt, chat=False)
        if keep_alive == 0:
            d._unload(inst)

    def api_chat(self) -> None:
        d = self.d
        req = self._json()
        raw, inst = self._model_for_run(req)
        messages = req.get("messages") or []
        keep_alive = parse_keep_alive(req.get("keep_alive"))
        if not messages and keep_alive == 0:
            d._unload(inst)
            self.send_json(200, {"model": raw, "created_at": rfc3339(time.time_ns()),
                                 "message": {"role": "assistant", "content": ""},
                                 "done_reason": "unload", "done": True})
            return
        if "completion" not in d._caps(inst):
            raise ApiError(400, f'"{raw}" does not support chat')
        loaded, load_ns = d._load(inst, req.get("options") or {}, req.get("keep_alive"))
        if not messages:
            self.send_json(200, {"model": raw, "created_at": rfc3339(time.time_ns()),
                                 "message": {"role": "assistant", "content": ""},
                                 "done_reason": "load", "done": True})
            return
        prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        self._generate_stream(raw, req, loaded, load_ns, prompt, chat=True)

    def _generate_stream(self, raw: str, req: dict[str, Any], loaded: Loaded, load_ns: int,
                         prompt: str, chat: bool) -> None:
        d = self.d
        plan = completion(loaded, load_ns, prompt, req.get("options") or {})
        stream = req.get("stream") is not False
        name = loaded.key
        faults = d._matching_faults(("error_line", "garbage"), self.rec.path,
                                    ModelName(*name) if name else None)

        def obj(text: str, ts: int) -> dict[str, Any]:
            if chat:
                return {"model": raw, "created_at": rfc3339(ts),
                        "message": {"role": "assistant", "content": text}, "done": False}
            return {"model": raw, "created_at": rfc3339(ts), "response": text, "done": False}

        final: dict[str, Any] = {"model": raw, "created_at": rfc3339(plan["end_ns"])}
        if chat:
            final["message"] = {"role": "assistant", "content": "" if stream else plan["text"]}
            final["done_reason"] = plan["done_reason"]
            final["done"] = True
        else:
            final["response"] = "" if stream else plan["text"]
            final["done"] = True
            final["done_reason"] = plan["done_reason"]
            final["context"] = plan["context"]
        for key in ("total_duration", "load_duration", "prompt_eval_count",
                    "prompt_eval_duration", "eval_count", "eval_duration"):
            final[key] = plan[key]
        if not stream:
            self.send_json(200, final)
            return
        self.start_stream()
        for i, (text, ts) in enumerate(zip(plan["tokens"], plan["times"])):
            self.line(obj(text, ts))
            if i == 0:
                for f in faults:
                    if d._consume(f):
                        if f.kind == "garbage":
                            self.chunk(((f.message or DEFAULT_GARBAGE) + "\n").encode())
                        else:
                            self.line({"error": f.message or "an error was encountered while "
                                                             "running the model"})
                            self.end_stream()
                            return
            if d.token_delay and d._stopping.wait(d.token_delay):
                raise Stopping()
        self.line(final)
        self.end_stream()

    def api_embed(self) -> None:
        d = self.d
        req = self._json()
        raw, inst = self._model_for_run(req, embed=True)
        if d.llama_server and "embedding" not in d._caps(inst):
            # 0.30+: llama-server runs a completion model without --embeddings.
            raise ApiError(501, "This server does not support embeddings. Start it with "
                                 "`--embeddings`")
        inputs = req.get("input")
        items = inputs if isinstance(inputs, list) else [inputs or ""]
        loaded, load_ns = d._load(inst, req.get("options") or {}, req.get("keep_alive"))
        dim = inst.source.embedding_length
        vectors = [embedding(str(text), dim) for text in items]
        count = sum(max(1, len(str(t).split())) for t in items)
        total = load_ns + int(count / (loaded.tokens_per_second * 20) * 1e9) + 1_000_000
        self.send_json(200, {"model": raw, "embeddings": vectors, "total_duration": total,
                             "load_duration": load_ns, "prompt_eval_count": count})

    def api_embeddings(self) -> None:
        d = self.d
        req = self._json()
        _, inst = self._model_for_run(req, embed=True)
        d._load(inst, req.get("options") or {}, req.get("keep_alive"))
        vector = embedding(str(req.get("prompt") or ""), inst.source.embedding_length)
        self.send_json(200, {"embedding": [float(x) for x in vector]})


def completion(loaded: Loaded, load_ns: int, prompt: str,
               options: dict[str, Any]) -> dict[str, Any]:
    """Tokens and durations of one generation (virtual time from tokens/s)."""
    natural = 12
    limit = options.get("num_predict")
    count = natural if not limit or int(limit) < 0 else min(int(limit), natural)
    reason = "length" if limit and 0 <= int(limit) <= natural else "stop"
    tokens = [_WORDS[i % len(_WORDS)] for i in range(count)]
    prompt_count = max(1, int(len(prompt.split()) * 1.3) + 5)
    tps = loaded.tokens_per_second
    eval_ns = int(count / tps * 1e9)
    prompt_ns = int(prompt_count / (tps * 20) * 1e9)
    start = time.time_ns()
    times = [start + load_ns + prompt_ns + int((i + 1) / tps * 1e9) for i in range(count)]
    total = load_ns + prompt_ns + eval_ns + 1_000_000
    context = [(zlib.crc32(w.encode()) & 0xFFFF) + 256 for w in prompt.split()][:64] + [
        259 + i for i in range(count)]
    return {"tokens": tokens, "times": times, "text": "".join(tokens),
            "done_reason": reason, "context": context, "end_ns": start + total,
            "total_duration": total, "load_duration": load_ns,
            "prompt_eval_count": prompt_count, "prompt_eval_duration": prompt_ns,
            "eval_count": count, "eval_duration": eval_ns}

def embedding(text: str, dim: int) -> list[F32]:
    """A unit vector that depends on the text only."""
    seed = int(sha256_hex(text.encode())[:8], 16)
    raw = [math.sin(seed * 0.001 + i * 0.37) for i in range(dim)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [F32(x / norm) for x in raw]


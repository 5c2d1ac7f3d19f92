"""The OpenAI-compatible endpoints: `/v1/models`, `/v1/chat/completions` (JSON or SSE)
and `/v1/responses` (0.13.4 and later), in the shapes of Ollama's `openai/` package."""

from __future__ import annotations

import itertools
import re
import secrets
import time
from typing import Any

from tests.double.generate import completion
from tests.double.names import InvalidName, ModelName, parse_name
from tests.double.state import Loaded
from tests.double.transport import PLAIN_JSON_CT, ApiError, BaseHandler
from tests.double.wire import go_json, sorted_keys

V1_MODEL_RE = re.compile(r"^/v1/models/(?P<name>.+)$")


class OpenAIRoutes(BaseHandler):
    """`/v1/models`, `/v1/models/<name>`, `/v1/chat/completions`, `/v1/responses`."""

    def _openai_error(self, status: int, message: str) -> None:
        kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        self.send_json(status, {"error": {"message": message, "type": kind, "param": None,
                                          "code": None}}, ctype=PLAIN_JSON_CT)

    def v1_models(self) -> None:
        data = [{"id": m.name.short, "object": "model", "created": m.modified_ns // 10**9,
                 "owned_by": m.name.namespace} for m in self.d._installed_sorted()]
        self.send_json(200, {"object": "list", "data": data}, ctype=PLAIN_JSON_CT)

    def v1_model(self, raw: str) -> None:
        try:
            name: ModelName | None = parse_name(raw)
        except InvalidName:
            name = None
        inst = self.d._get_installed(name) if name is not None else None
        if inst is None:
            shown = name.short if name is not None and self.d.llama_server else raw
            self._openai_error(404, f"model '{shown}' not found")
            return
        self.send_json(200, {"id": raw, "object": "model", "created": inst.modified_ns // 10**9,
                             "owned_by": inst.name.namespace}, ctype=PLAIN_JSON_CT)

    def _openai_run(self) -> tuple[dict[str, Any], str, Loaded, int] | None:
        try:
            req = self._json()
            raw, inst = self._model_for_run(req)
            if "completion" not in self.d._caps(inst):
                raise ApiError(400, f'"{raw}" does not support chat')
            loaded, load_ns = self.d._load(inst, {}, None)
        except ApiError as e:
            self._openai_error(e.status, e.message)
            return None
        return req, raw, loaded, load_ns

    def _sse(self, data: str, event: str | None = None) -> None:
        prefix = f"event: {event}\n" if event else ""
        self.chunk(f"{prefix}data: {data}\n\n".encode())

    def v1_chat(self) -> None:
        run = self._openai_run()
        if run is None:
            return
        req, raw, loaded, load_ns = run
        messages = req.get("messages") or []
        prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        max_tokens = req.get("max_tokens") or req.get("max_completion_tokens")
        plan = completion(loaded, load_ns, prompt,
                                  {"num_predict": max_tokens} if max_tokens else {})
        ident = f"chatcmpl-{secrets.randbelow(1000)}"
        created = int(time.time())
        finish = "length" if plan["done_reason"] == "length" else "stop"
        if req.get("stream"):
            self.start_stream("text/event-stream")
            new = self.d.llama_server  # 0.30+: as a real 0.32.15 streams
            for i, text in enumerate(plan["tokens"]):
                delta = {"content": text} if new and i else {"role": "assistant",
                                                             "content": text}
                self._sse(go_json({
                    "id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": raw, "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
            self._sse(go_json({
                "id": ident, "object": "chat.completion.chunk", "created": created,
                "model": raw, "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "delta": {} if new else {"role": "assistant",
                                                                  "content": ""},
                             "finish_reason": finish}]}))
            self._sse("[DONE]")
            self.end_stream()
            return
        self.send_json(200, {
            "id": ident, "object": "chat.completion", "created": created, "model": raw,
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": plan["text"]},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": plan["prompt_eval_count"],
                      "completion_tokens": plan["eval_count"],
                      "total_tokens": plan["prompt_eval_count"] + plan["eval_count"]}},
            ctype=PLAIN_JSON_CT)

    def v1_responses(self) -> None:
        run = self._openai_run()
        if run is None:
            return
        req, raw, loaded, load_ns = run
        given = req.get("input")
        if isinstance(given, list):
            texts = []
            for item in given:
                content = item.get("content") if isinstance(item, dict) else item
                if isinstance(content, list):
                    texts += [str(c.get("text", "")) for c in content if isinstance(c, dict)]
                else:
                    texts.append(str(content or ""))
            prompt = " ".join(texts)
        else:
            prompt = str(given or "")
        max_tokens = req.get("max_output_tokens")
        plan = completion(loaded, load_ns, prompt,
                                  {"num_predict": max_tokens} if max_tokens else {})
        rid = f"resp_{secrets.token_hex(12)}"
        mid = f"msg_{secrets.token_hex(12)}"
        created = int(time.time())
        usage = {"input_tokens": plan["prompt_eval_count"], "output_tokens": plan["eval_count"],
                 "total_tokens": plan["prompt_eval_count"] + plan["eval_count"]}

        rich = self.d.llama_server  # 0.30+: the fuller object a real 0.32.15 sends
        if rich:
            usage.update(input_tokens_details={"cached_tokens": 0},
                         output_tokens_details={"reasoning_tokens": 0})

        def response(status: str, output: list[Any], with_usage: bool) -> dict[str, Any]:
            if rich:
                return {
                    "id": rid, "object": "response", "created_at": created,
                    "completed_at": created if status == "completed" else None,
                    "status": status, "incomplete_details": None, "model": raw,
                    "previous_response_id": None, "instructions": req.get("instructions"),
                    "output": output, "error": None, "tools": req.get("tools") or [],
                    "tool_choice": req.get("tool_choice", "auto"), "truncation": "disabled",
                    "parallel_tool_calls": True, "text": {"format": {"type": "text"}},
                    "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0,
                    "top_logprobs": 0, "temperature": 1, "reasoning": None,
                    "usage": usage if with_usage else None, "max_output_tokens": max_tokens,
                    "max_tool_calls": None, "store": False, "background": False,
                    "service_tier": "default", "metadata": {}, "safety_identifier": None,
                    "prompt_cache_key": None}
            return {"id": rid, "object": "response", "created_at": created, "status": status,
                    "error": None, "incomplete_details": None,
                    "instructions": req.get("instructions"), "model": raw, "output": output,
                    "parallel_tool_calls": True, "previous_response_id": None,
                    "tool_choice": req.get("tool_choice", "auto"),
                    "tools": req.get("tools") or [],
                    "usage": usage if with_usage else None}

        logprobs: dict[str, Any] = {"logprobs": []} if rich else {}
        part = {"type": "output_text", "text": plan["text"], "annotations": [], **logprobs}
        message = {"id": mid, "type": "message", "status": "completed", "role": "assistant",
                   "content": [part]}
        if not req.get("stream"):
            self.send_json(200, response("completed", [message], True), ctype=PLAIN_JSON_CT)
            return
        self.start_stream("text/event-stream")
        seq = itertools.count()

        def event(kind: str, **payload: Any) -> None:
            data = {"type": kind, "sequence_number": next(seq), **payload}
            # 0.30+ encodes the events from maps: every object's keys come sorted.
            self._sse(go_json(sorted_keys(data) if rich else data), kind)

        event("response.created", response=response("in_progress", [], False))
        event("response.in_progress", response=response("in_progress", [], False))
        event("response.output_item.added", output_index=0,
              item={**message, "status": "in_progress", "content": []})
        event("response.content_part.added", item_id=mid, output_index=0, content_index=0,
              part={"type": "output_text", "text": "", "annotations": [], **logprobs})
        for text in plan["tokens"]:
            event("response.output_text.delta", item_id=mid, output_index=0, content_index=0,
                  delta=text, **logprobs)
        event("response.output_text.done", item_id=mid, output_index=0, content_index=0,
              text=plan["text"], **logprobs)
        event("response.content_part.done", item_id=mid, output_index=0, content_index=0,
              part=part)
        event("response.output_item.done", output_index=0, item=message)
        event("response.completed", response=response("completed", [message], True))
        self.end_stream()

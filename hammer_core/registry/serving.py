"""The registered model: an MLflow pyfunc that answers OpenAI chat-completions requests with tool calls.

Logged "from code" (``hammer_core/registry/mlflow_model.py``), so nothing is pickled: loading the
model runs this module and reads the exported base + N PEFT adapters from its artifacts::

    m = mlflow.pyfunc.load_model("models:/hammer-fc@champion")
    m.predict({"messages": [{"role": "user", "content": "Weather in Paris?"}],
               "tools": [{"type": "function", "function": {"name": "get_weather", ...}}],
               "custom_inputs": {"task": "travel"}})
    # -> {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls",
    #     "message": {"role": "assistant", "content": None, "tool_calls": [{"id": "call_...",
    #       "type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]}}],
    #     "usage": {...}, "custom_outputs": {"task": "travel", "stopped_by": "eos"}, ...}

**Which MLflow interface.** MLflow 3 offers three chat interfaces: ``ResponsesAgent`` (the one it
recommends; it speaks OpenAI's *Responses* API, ``input``/``output`` items, not chat
completions), ``ChatAgent`` (its own message schema, "similar to but not strictly compatible
with" ChatCompletion) and ``ChatModel`` (ChatCompletion, deprecated since 3.0). Clients here
send chat-completions requests, so ResponsesAgent and ChatAgent do not fit; ChatModel would,
but its request parsing drops ``tool_choice`` (``ChatParams`` has no such field), reduces tool
parameter schemas to its own ``ParamProperty`` (nested ``properties``, ``anyOf`` or ``default``
are lost or rejected) and turns a malformed request into a generic "unexpected error". So this
is a plain ``mlflow.pyfunc.PythonModel`` that speaks the OpenAI chat-completions schema itself,
the way MLflow's scoring server serves chat models: a JSON body with ``messages`` is passed to
``predict`` unwrapped (no ``dataframe_records``/``inputs``) and the answer comes back unwrapped.

**Request** (a dict; ``POST /invocations`` with the same JSON behind ``mlflow models serve``):

- ``messages``: OpenAI chat messages (``system``/``developer``, ``user``, ``assistant`` with
  optional ``tool_calls``, ``tool``); content is a string, null or a list of text parts;
- ``tools``: ``[{"type": "function", "function": {"name", "description", "parameters"}}]``
  (JSON-schema and xLAM-style specs are read too);
- ``tool_choice``: ``"auto"`` (default: every tool offered), ``"none"`` (no tool offered, no
  call returned: the text is the content), ``{"type": "function", "function": {"name": N}}``
  (only tool N offered), ``"required"`` (read as ``"auto"``: the model is offered every tool
  but may still answer without a call; decoding is not constrained);
- ``custom_inputs``: ``{"task": T}``, the CGC-LoRA task whose adapter answers (MLflow's chat
  convention for extra inputs); default: the model's first task;
- ``max_tokens`` / ``max_completion_tokens`` lower the configured ``max_new_tokens``;
  ``model``, ``temperature``, ``top_p``, ``seed``, ``user`` and ``parallel_tool_calls`` are
  accepted and ignored (decoding is greedy); ``n`` must be 1 and ``stream`` false. Any other
  field is a 400.

**Response**: an OpenAI ``ChatCompletion``. When the output parses into calls (with
:func:`hammer_core.evaluation.parsing.parse_calls`, the project's one parser), ``choices[0].message``
has ``tool_calls`` (``arguments`` a JSON string) and ``finish_reason`` is ``"tool_calls"``;
otherwise ``content`` is the generated text (Hammer answers "no suitable tool" with ``[]``)
and ``finish_reason`` is ``"stop"``, or ``"length"`` when ``max_new_tokens`` or the deadline
cut it. ``custom_outputs`` says which task answered and what stopped generation
(``eos``, ``max_tokens`` or ``deadline``).

**Limits** (``serving`` in the pipeline config, recorded in the model's ``model_config``; see
:class:`hammer_core.config.ServingConfig`): a request larger than ``max_request_bytes`` (as
compact JSON) or with more than ``max_tools`` tools is refused before its prompt is built, a
prompt over ``max_prompt_tokens`` before anything is generated, each with an HTTP 400 naming
the limit. Generation stops at ``deadline_s`` after the request arrived (a stopping criterion
that checks the clock after every token), waiting for the model included: one request
generates at a time (the adapters are switched per request), and a request that waits past
its deadline is a 503. MLflow's scoring server reads the whole body before the model sees it;
a transport-level cap on body size belongs in the proxy in front of it.

**The records form** (before the chat interface, still used by ``hammer demo``'s checks and
kept for existing callers): a list of dicts or a DataFrame, one request per row, each with
``messages`` or ``query`` (a string), ``tools`` (a list or its JSON string) and an optional
``task``, answers one ``{"calls": [{"name", "arguments": {...}}], "raw": text, "task"}`` per
row (``POST /invocations`` with ``{"dataframe_records": [...]}`` or ``{"inputs": [...]}``).
The same limits apply to each row, and the byte limit to the whole batch.

A bad request raises :class:`BadRequest` (a ``ValueError``; HTTP 400 behind the scoring
server) naming what is wrong.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import mlflow.pyfunc
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
from transformers import StoppingCriteria, StoppingCriteriaList

from hammer_core.config import ServingConfig
from hammer_core.evaluation.parsing import parse_calls
from hammer_core.data.tokenization import prompt_text

# Chat-completions fields accepted and ignored: the model decodes greedily, one choice, no stream.
IGNORED_FIELDS = frozenset({"model", "temperature", "top_p", "seed", "user", "parallel_tool_calls"})
CHAT_FIELDS = frozenset({"messages", "tools", "tool_choice", "custom_inputs", "max_tokens",
                         "max_completion_tokens", "n", "stream"}) | IGNORED_FIELDS


class _ServingError(MlflowException):
    """An error whose message stays as raised: MLflow's scoring server would prefix it with
    ``Failed to predict data '<the whole request>'``, echoing a refused megabyte request back."""

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


class BadRequest(_ServingError, ValueError):
    """A request the model cannot answer: a ``ValueError`` to Python callers, and an HTTP 400 whose
    message says why behind ``mlflow models serve`` (other errors become an opaque 500/400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


class Busy(_ServingError):
    """The model stayed busy with other requests until this one's deadline: HTTP 503."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=TEMPORARILY_UNAVAILABLE)


@dataclass(frozen=True)
class Answer:
    """One generation: the text, its calls (``None``: nothing parses), and what it cost."""

    text: str
    calls: list[dict[str, Any]] | None
    task: str
    prompt_tokens: int
    completion_tokens: int
    stopped_by: str  # eos | max_tokens | deadline


class Deadline(StoppingCriteria):
    """Stops generation once ``time.monotonic()`` passes ``at`` (checked after every token)."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.hit = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.hit = self.hit or time.monotonic() >= self.at
        return torch.full((input_ids.shape[0],), self.hit, dtype=torch.bool, device=input_ids.device)


def _plain(value: Any) -> Any:
    """numpy arrays/scalars (pandas, parquet, the scoring server) -> Python; NaN -> None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _records(model_input: Any) -> list[dict[str, Any]]:
    if hasattr(model_input, "to_dict"):  # pandas DataFrame
        return [_plain(r) for r in model_input.to_dict(orient="records")]
    if isinstance(model_input, str):
        raise BadRequest("expected a chat request (a dict) or records (a DataFrame or a list of dicts), "
                         "got a string")
    return [_plain(r) for r in model_input]


def check_size(request: Any, limits: ServingConfig) -> None:
    """``max_request_bytes``: the request as compact JSON."""
    size = len(json.dumps(request, ensure_ascii=False, separators=(",", ":"), default=str).encode())
    if size > limits.max_request_bytes:
        raise BadRequest(f"request too large: {size} bytes > serving.max_request_bytes = "
                         f"{limits.max_request_bytes}")


def _tool_list(tools: Any, limits: ServingConfig) -> list[dict[str, Any]]:
    """Canonical tools of a request (any style), counted against ``max_tools`` before converting."""
    from hammer_core.data.row_errors import RowError
    from hammer_core.data.formats.hammer_testset import convert_any_tool

    tools = tools or []
    if not isinstance(tools, list):
        raise ValueError(f"'tools' must be a list of tool specs, got {type(tools).__name__}")
    if len(tools) > limits.max_tools:
        raise ValueError(f"too many tools: {len(tools)} > serving.max_tools = {limits.max_tools}")
    try:
        return [convert_any_tool(t, i) for i, t in enumerate(tools)]
    except RowError as err:
        raise ValueError(f"bad tool: {err.detail}") from None


def _json_field(rec: dict[str, Any], key: str) -> Any:
    value = rec.get(key)
    if isinstance(value, str) and key in ("tools", "messages"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"'{key}' is a string but not JSON ({err.msg} at {err.pos})") from None
    return value


def _task(task: Any, tasks: list[str]) -> str:
    task = task or tasks[0]
    if task not in tasks:
        raise ValueError(f"unknown task {task!r}; this model has {tasks}")
    return task


def request_parts(rec: Any, tasks: list[str], limits: ServingConfig) -> tuple[list[dict[str, str]],
                                                                              list[dict[str, Any]], str]:
    """(messages, canonical tools, task) of one request in the records form; ValueError says
    what is wrong."""
    if not isinstance(rec, dict):
        raise ValueError(f"a request is a dict/record, got {type(rec).__name__}")
    unknown = set(rec) - {"messages", "query", "tools", "task"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; a request has messages or query, tools, task")
    messages = _json_field(rec, "messages")
    if not messages:
        query = rec.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ValueError("needs 'messages' (a list of {role, content}) or 'query' (a string)")
        messages = [{"role": "user", "content": query}]
    if not isinstance(messages, list):
        raise ValueError(f"'messages' must be a list of {{role, content}}, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} must be {{'role': str, 'content': str}}, got {m!r:.200}")
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    tools = _tool_list(_json_field(rec, "tools"), limits)
    return messages, tools, _task(rec.get("task"), tasks)


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    tools: list[dict[str, Any]]  # the tools offered (after tool_choice)
    task: str
    calls_allowed: bool          # False for tool_choice "none"
    max_new_tokens: int


def chat_request(req: dict[str, Any], tasks: list[str], limits: ServingConfig,
                 max_new_tokens: int) -> ChatRequest:
    """A chat-completions request, read and checked; ValueError says what is wrong."""
    from hammer_core.data.row_errors import RowError
    from hammer_core.data.formats.openai import openai_turn

    unknown = set(req) - CHAT_FIELDS
    if unknown:
        hint = " (the records form, with query/task, is a list of dicts)" if unknown & {"query", "task"} else ""
        raise ValueError(f"unsupported fields {sorted(unknown)}; a chat request has {sorted(CHAT_FIELDS)}"
                         + hint)
    if req.get("n") not in (None, 1):
        raise ValueError(f"'n' must be 1 (one choice per request), got {req['n']!r}")
    if req.get("stream") not in (None, False):
        raise ValueError("'stream' is not supported: send stream=false")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list of chat messages")
    try:
        messages = [openai_turn(m, i).message() for i, m in enumerate(messages)]
    except RowError as err:
        raise ValueError(f"bad message: {err.detail}") from None
    tools = _tool_list(req.get("tools"), limits)
    choice, calls_allowed = req.get("tool_choice") or "auto", True
    if choice == "none":
        tools, calls_allowed = [], False
    elif choice in ("auto", "required"):
        if choice == "required" and not tools:
            raise ValueError("tool_choice 'required' needs tools")
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        tools = [t for t in tools if t["name"] == name]
        if not tools:
            raise ValueError(f"tool_choice names the function {name!r}, which is not among the tools")
    else:
        raise ValueError(f"tool_choice must be 'auto', 'none', 'required' or "
                         f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r:.200}")
    custom = req.get("custom_inputs") or {}
    if not isinstance(custom, dict) or set(custom) - {"task"}:
        raise ValueError(f"'custom_inputs' may only hold 'task', got {custom!r:.200}")
    cap = max_new_tokens
    for key in ("max_tokens", "max_completion_tokens"):
        value = req.get(key)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"'{key}' must be a positive integer, got {value!r}")
            cap = min(cap, value)
    return ChatRequest(messages, tools, _task(custom.get("task"), tasks), calls_allowed, cap)


def chat_completion(answer: Answer, model: str, calls_allowed: bool = True) -> dict[str, Any]:
    """The OpenAI ``ChatCompletion`` of an answer (tool calls, else the text as content)."""
    calls = (answer.calls or []) if calls_allowed else []
    if calls:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
            for c in calls]}
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": answer.text}
        finish = "stop" if answer.stopped_by == "eos" else "length"
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                      "total_tokens": answer.prompt_tokens + answer.completion_tokens},
            "custom_outputs": {"task": answer.task, "stopped_by": answer.stopped_by}}


class HammerFunctionCaller(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from hammer_core.model.trained import load_exported

        self.model, self.tokenizer, self.manifest = load_exported(context.artifacts["export"])
        config = context.model_config or {}
        self.max_new_tokens = int(config.get("max_new_tokens", 128))
        self.prompt_format = config.get("prompt_format", "hammer")
        self.model_name = config.get("model_name", "hammer")
        self.limits = ServingConfig(**{k: config[k] for k in ServingConfig.model_fields if k in config})
        context_len = (getattr(self.model.config, "max_position_embeddings", None)
                       or self.tokenizer.model_max_length)
        self.max_prompt_tokens = min(self.limits.max_prompt_tokens or context_len,
                                     context_len - self.max_new_tokens)
        if self.max_prompt_tokens < 1:
            raise ValueError(f"max_new_tokens = {self.max_new_tokens} leaves no room for a prompt in the "
                             f"base model's context of {context_len} tokens")
        self._lock = threading.Lock()  # one generation at a time: set_adapter is model-wide state

    def answer(self, messages: list[dict[str, str]], tools: list[dict[str, Any]], task: str,
               max_new_tokens: int, started: float) -> Answer:
        """Generate the answer to one request that arrived at ``started`` (``time.monotonic()``)."""
        ids = self.tokenizer(prompt_text(self.tokenizer, messages, tools, self.prompt_format),
                             add_special_tokens=False, return_tensors="pt")
        n_prompt = ids["input_ids"].shape[1]
        if n_prompt > self.max_prompt_tokens:
            raise ValueError(f"prompt too long: {n_prompt} tokens > serving.max_prompt_tokens = "
                             f"{self.max_prompt_tokens}")
        deadline = Deadline(started + self.limits.deadline_s)
        if not self._lock.acquire(timeout=max(deadline.at - time.monotonic(), 0.0)):
            raise Busy(f"the model was busy with other requests for serving.deadline_s = "
                       f"{self.limits.deadline_s:g} s; retry later")
        try:
            self.model.set_adapter(task)
            with torch.no_grad():
                out = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                          stopping_criteria=StoppingCriteriaList([deadline]),
                                          pad_token_id=self.tokenizer.pad_token_id,
                                          eos_token_id=self.tokenizer.eos_token_id)
        finally:
            self._lock.release()
        new = out[0, n_prompt:]
        ended = len(new) > 0 and int(new[-1]) == self.tokenizer.eos_token_id
        stopped_by = "eos" if ended else "deadline" if deadline.hit else "max_tokens"
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Answer(text, parse_calls(text), task, n_prompt, len(new), stopped_by)

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one chat-completions request with a ``ChatCompletion`` (see the module docstring)."""
        started = time.monotonic()
        check_size(request, self.limits)
        try:
            req = chat_request(_plain(request), self.manifest["tasks"], self.limits, self.max_new_tokens)
            answer = self.answer(req.messages, req.tools, req.task, req.max_new_tokens, started)
        except BadRequest:
            raise
        except ValueError as err:
            raise BadRequest(str(err)) from None
        return chat_completion(answer, self.model_name, req.calls_allowed)

    def _one(self, rec: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        messages, tools, task = request_parts(rec, self.manifest["tasks"], self.limits)
        answer = self.answer(messages, tools, task, self.max_new_tokens, started)
        return {"calls": answer.calls if answer.calls is not None else [], "raw": answer.text, "task": task}

    def _predict(self, context, model_input, params=None) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(model_input, dict):  # one chat-completions request
            return self.chat(model_input)
        records = _records(model_input)
        check_size(records, self.limits)
        out = []
        for i, rec in enumerate(records):
            try:
                out.append(self._one(rec))
            except BadRequest:
                raise
            except ValueError as err:
                raise BadRequest(f"request {i}: {err}") from None
        return out


# Assigned after the class statement on purpose: MLflow's subclass hook warns when predict()
# has no type hints, and this predict takes free-form requests (a chat request or records).
HammerFunctionCaller.predict = HammerFunctionCaller._predict

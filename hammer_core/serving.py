"""The registered model: an MLflow pyfunc that turns (messages or query, tools, task) into calls.

Logged "from code" (``hammer_core/mlflow_model.py``), so nothing is pickled: loading the
model runs this module and reads the exported base + N PEFT adapters from its artifacts::

    m = mlflow.pyfunc.load_model("models:/hammer-fc@champion")
    m.predict([{"query": "Weather in Paris?", "tools": [...], "task": "travel"}])
    # -> [{"calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}], "raw": "...", "task": "travel"}]

Input: a pandas DataFrame (one row per request), a list of dicts, or one dict, each with
``messages`` (a list of ``{"role", "content"}``) or ``query`` (a string), ``tools`` (a list of
tool specs -- JSON-schema, OpenAI ``{"type": "function", "function": ...}`` or xLAM style --
or that list as a JSON string) and an optional ``task`` (default: the model's first task;
each task has its own adapter). Output: one dict per request, ``calls`` being the list of
``{"name", "arguments"}`` (``[]`` for "no call"), ``raw`` the generated text. Served with
``mlflow models serve -m models:/hammer-fc@champion --env-manager local``, it answers
``POST /invocations`` with ``{"dataframe_records": [...]}`` or ``{"inputs": [...]}``.
A bad request raises :class:`BadRequest` (a ``ValueError``; HTTP 400 behind the scoring
server) naming the request and what is wrong.
"""

from __future__ import annotations

import json
import math
from typing import Any

import mlflow.pyfunc
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from hammer_core.evaluation import parse_calls
from hammer_core.tokenization import prompt_text


class BadRequest(MlflowException, ValueError):
    """A request the model cannot answer: a ``ValueError`` to Python callers, and an HTTP 400 whose
    message says why behind ``mlflow models serve`` (other errors become an opaque 500/400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


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
    if isinstance(model_input, dict):  # one request
        return [_plain(model_input)]
    if isinstance(model_input, str):
        raise BadRequest("expected records (a DataFrame, a list of dicts or one dict), got a string")
    return [_plain(r) for r in model_input]


def _json_field(rec: dict[str, Any], key: str) -> Any:
    value = rec.get(key)
    if isinstance(value, str) and key in ("tools", "messages"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"'{key}' is a string but not JSON ({err.msg} at {err.pos})") from None
    return value


def request_parts(rec: Any, tasks: list[str]) -> tuple[list[dict[str, str]], list[dict[str, Any]], str]:
    """(messages, canonical tools, task) of one request; ValueError says what is wrong."""
    from hammer_core.formats import RowError
    from hammer_core.formats.hammer_testset import convert_any_tool

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
    tools = _json_field(rec, "tools") or []
    if not isinstance(tools, list):
        raise ValueError(f"'tools' must be a list of tool specs (or its JSON), got {type(tools).__name__}")
    try:
        tools = [convert_any_tool(t, i) for i, t in enumerate(tools)]
    except RowError as err:
        raise ValueError(f"bad tool: {err.detail}") from None
    task = rec.get("task") or tasks[0]
    if task not in tasks:
        raise ValueError(f"unknown task {task!r}; this model has {tasks}")
    return messages, tools, task


class HammerFunctionCaller(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from hammer_core.adapters import load_exported

        self.model, self.tokenizer, self.manifest = load_exported(context.artifacts["export"])
        self.max_new_tokens = int((context.model_config or {}).get("max_new_tokens", 128))
        self.prompt_format = (context.model_config or {}).get("prompt_format", "hammer")

    def _one(self, rec: dict[str, Any]) -> dict[str, Any]:
        messages, tools, task = request_parts(rec, self.manifest["tasks"])
        self.model.set_adapter(task)
        ids = self.tokenizer(prompt_text(self.tokenizer, messages, tools, self.prompt_format),
                             add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id,
                                      eos_token_id=self.tokenizer.eos_token_id)
        text = self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        calls = parse_calls(text)
        return {"calls": calls if calls is not None else [], "raw": text, "task": task}

    def _predict(self, context, model_input, params=None) -> list[dict[str, Any]]:
        records = _records(model_input)
        out = []
        for i, rec in enumerate(records):
            try:
                out.append(self._one(rec))
            except ValueError as err:
                raise BadRequest(f"request {i}: {err}") from None
        return out


# Assigned after the class statement on purpose: MLflow's subclass hook warns when predict()
# has no type hints, and this predict takes free-form records (query or messages, tools, task).
HammerFunctionCaller.predict = HammerFunctionCaller._predict

"""The registered model: an MLflow pyfunc that turns (query or messages, tools, task) into calls.

Logged "from code" (``hammer_core/mlflow_model.py``), so nothing is pickled: loading the
model runs this module and reads the exported base + N PEFT adapters from its artifacts::

    m = mlflow.pyfunc.load_model("models:/hammer-fc/1")
    m.predict([{"query": "Weather in Paris?", "tools": [...], "task": "travel"}])
    # -> [{"calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}], "raw": "..."}]
"""

from __future__ import annotations

import json
from typing import Any

import mlflow.pyfunc
import torch

from hammer_core.evaluation import parse_calls
from hammer_core.tokenization import prompt_text


def _records(model_input: Any) -> list[dict[str, Any]]:
    if hasattr(model_input, "to_dict"):  # pandas DataFrame
        return model_input.to_dict(orient="records")
    if isinstance(model_input, dict):
        return [model_input]
    return list(model_input)


class HammerFunctionCaller(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from hammer_core.adapters import load_exported

        self.model, self.tokenizer, self.manifest = load_exported(context.artifacts["export"])
        self.max_new_tokens = int((context.model_config or {}).get("max_new_tokens", 128))

    def _one(self, rec: dict[str, Any]) -> dict[str, Any]:
        tools = rec.get("tools") or []
        if isinstance(tools, str):
            tools = json.loads(tools)
        messages = rec.get("messages")
        if isinstance(messages, str):
            messages = json.loads(messages)
        if not messages:
            if not rec.get("query"):
                raise ValueError("each input needs 'messages' or 'query'")
            messages = [{"role": "user", "content": rec["query"]}]
        task = rec.get("task") or self.manifest["tasks"][0]
        if task not in self.manifest["tasks"]:
            raise ValueError(f"unknown task {task!r}; this model has {self.manifest['tasks']}")
        self.model.set_adapter(task)
        ids = self.tokenizer(prompt_text(self.tokenizer, list(messages), tools),
                             add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id,
                                      eos_token_id=self.tokenizer.eos_token_id)
        text = self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        calls = parse_calls(text)
        return {"calls": calls if calls is not None else [], "raw": text, "task": task}

    def _predict(self, context, model_input, params=None) -> list[dict[str, Any]]:
        return [self._one(rec) for rec in _records(model_input)]


# Assigned after the class statement on purpose: MLflow's subclass hook warns when predict()
# has no type hints, and this predict takes free-form records (query or messages, tools, task).
HammerFunctionCaller.predict = HammerFunctionCaller._predict

"""Hammer's prompt format: task instruction, tools, format instruction, query; answer in a fence.

The prompt is the user turn; the target is the JSON list of calls inside a ``` fence, and
``[]`` means "no call". The model's own chat template (when the tokenizer has one) wraps the
prompt, so the same rendering serves any instruct model.
"""

from __future__ import annotations

import json
from typing import Any

TASK_INSTRUCTION = (
    "You are a tool calling assistant. In order to complete the user's request, you need to "
    "select one or more appropriate tools from the following tools and fill in the correct "
    "values for the tool parameters. Your specific tasks are:\n"
    "1. Make one or more function/tool calls to meet the request based on the question.\n"
    "2. If none of the function can be used, point it out and refuse to answer.\n"
    "3. If the given question lacks the parameters required by the function, also point it out.\n"
)

FORMAT_INSTRUCTION = (
    "\nThe output MUST strictly adhere to the following JSON format, and NO other text MUST be "
    "included.\nThe example format is as follows. Please make sure the parameter type is "
    "correct. If no function call is needed, please directly output an empty list '[]'\n"
    "```\n[\n"
    '    {"name": "func_name1", "arguments": {"argument1": "value1", "argument2": "value2"}},\n'
    "    ... (more tool calls as required)\n]\n```\n"
)


def tools_for_prompt(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tools as the model sees them: Hammer appends ``default is '<v>'`` to described defaults.

    Internal keys (``x-python-type``) are dropped: they are provenance, not instructions.
    """
    shown = []
    for tool in tools:
        params = tool.get("parameters", {})
        props = {}
        for pname, spec in params.get("properties", {}).items():
            spec = {k: v for k, v in spec.items() if not k.startswith("x-")}
            if "default" in spec and spec["default"] not in (None, ""):
                desc = spec.get("description", "").rstrip()
                note = f"default is '{spec['default']}'"
                if note.lower() not in desc.lower():
                    sep = " " if desc.endswith(".") else ", "
                    spec["description"] = (desc + sep if desc else "") + note
            props[pname] = spec
        shown.append({**tool, "parameters": {**params, "properties": props}})
    return shown


def render_prompt(messages: list[dict[str, str]], tools: list[dict[str, Any]]) -> str:
    """The Hammer user prompt. The query is the last user turn; earlier turns go before it."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise ValueError("conversation has no user turn")
    last = users[-1]
    history = messages[:last]
    query = messages[last]["content"]
    if history:
        query = "\n".join(f"{m['role']}: {m['content']}" for m in history) + f"\nuser: {query}"
    tools_text = json.dumps(tools_for_prompt(tools), ensure_ascii=False)
    return (
        f"[BEGIN OF TASK INSTRUCTION]\n{TASK_INSTRUCTION}\n[END OF TASK INSTRUCTION]\n\n"
        f"[BEGIN OF AVAILABLE TOOLS]\n{tools_text}\n[END OF AVAILABLE TOOLS]\n\n"
        f"[BEGIN OF FORMAT INSTRUCTION]\n{FORMAT_INSTRUCTION}\n[END OF FORMAT INSTRUCTION]\n\n"
        f"[BEGIN OF QUERY]\n{query}\n[END OF QUERY]\n\n"
    )


def render_target(calls: list[dict[str, Any]]) -> str:
    """The answer: the JSON list of calls in a ``` fence (``[]`` for no call)."""
    return f"```\n{json.dumps(calls, ensure_ascii=False)}\n```"

"""Hammer's prompt format: task instruction, tools, format instruction, query; answer in a fence.

The prompt is the user turn; the target is the JSON list of calls inside a ``` fence, and
``[]`` means "no call". As in Hammer's inference code, a parameter's default is appended to
its description (``default is '<value>'``) when the tools are shown; internal keys
(``x-python-type``) are dropped. The tools are shown as ``json.dumps(tools)`` (Python's default
separators), the conversation before the last user turn as ``role: content`` lines above it.
The model's chat template (when the tokenizer has one) wraps the prompt; see
:mod:`hammer_core.data.tokenization`.

Fragments
---------
The renderer produces a prompt as a list of *fragments* whose concatenation is the prompt
text (:func:`render_prompt` is exactly ``"".join(prompt_fragments(...))``). Fragments are cut
where byte-level BPE pre-tokenizers (GPT-2, Qwen2, Llama-3 style) always split -- around
random names (a name between quotes that starts and ends with a letter or digit is a run of
whole pre-tokens), between tools (after ``,``, before the space), before and after a query
that neither starts nor ends with whitespace -- so each fragment can be tokenized on its own
and its tokens cached: instructions and each distinct tool's text are tokenized once, and a
row only costs its names, query and argument values. :mod:`hammer_core.data.tokenization` checks
that cutting is exact for the tokenizer in use before relying on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from json.encoder import encode_basestring
from typing import Any

from hammer_core.data.masking import PROMPT_FORM, CompiledTool, RowView, Template, ToolCache, ToolView, compile_template, \
    holds_its_characters, plain_view, value_json
from hammer_core.schema import dumps

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

#: The fixed text around the tools and the query:
#: ``HEAD + tools JSON + "\n" + MID + query + "\n" + TAIL``.
HEAD = (f"[BEGIN OF TASK INSTRUCTION]\n{TASK_INSTRUCTION}\n[END OF TASK INSTRUCTION]\n\n"
        "[BEGIN OF AVAILABLE TOOLS]\n")
MID = (f"[END OF AVAILABLE TOOLS]\n\n[BEGIN OF FORMAT INSTRUCTION]\n{FORMAT_INSTRUCTION}\n"
       "[END OF FORMAT INSTRUCTION]\n\n[BEGIN OF QUERY]\n")
TAIL = "[END OF QUERY]\n\n"
NO_CALL_TARGET = "```\n[]\n```"

_ISOLATED = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.]*[A-Za-z0-9])?")
#: Safe cuts: before a space that follows a non-whitespace character. No pre-token of the
#: GPT-2 / Qwen2 / Llama-3 pre-tokenizer regexes spans such a position (a run of letters,
#: digits or punctuation stops at a space, and whitespace runs start with whitespace), and
#: those regexes look only ahead, so the text on each side tokenizes as it does in context.
SAFE_CUT = re.compile(r"(?<=\S)(?= )")


def cut_ends(text: str) -> tuple[str, str, str]:
    """``text`` cut at its first and last safe cuts (``("", text, "")`` when there are none)."""
    first = text.find(" ", 1)  # SAFE_CUT's positions, found without the regex (``isspace`` is ``\s``)
    while first > 0 and text[first - 1].isspace():
        first = text.find(" ", first + 1)
    last = text.rfind(" ")
    while last > first and text[last - 1].isspace():
        last = text.rfind(" ", 0, last)
    if first <= 0 or last <= first:
        return "", text, ""
    return text[:first], text[first:last], text[last:]
_SPACED = json.JSONEncoder(ensure_ascii=False).encode


def prompt_spec(spec: Any) -> Any:
    """A parameter spec as shown: ``x-`` keys dropped, ``default is '<v>'`` appended."""
    if not isinstance(spec, dict):
        return spec
    spec = {k: v for k, v in spec.items() if not k.startswith("x-")}
    if "default" in spec and spec["default"] not in (None, ""):
        desc = str(spec.get("description", "")).rstrip()
        note = f"default is '{spec['default']}'"
        if note.lower() not in desc.lower():
            sep = " " if desc.endswith(".") else ", "
            spec["description"] = (desc + sep if desc else "") + note
    return spec


def tool_for_prompt(tool: dict[str, Any]) -> dict[str, Any]:
    """One tool as the model sees it (see :func:`prompt_spec`)."""
    params = tool.get("parameters", {})
    props = {p: prompt_spec(s) for p, s in params.get("properties", {}).items()}
    return {**tool, "parameters": {**params, "properties": props}}


def tools_for_prompt(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tools as the model sees them (see :func:`prompt_spec`)."""
    return [tool_for_prompt(t) for t in tools]


class _Shown:
    """The prompt form of a compiled tool: its text and its name-slot template, and their
    variants for each position in the list (first or not, last or not)."""

    __slots__ = ("text", "template", "full", "spec_texts", "plain", "masked")

    def __init__(self, tool: CompiledTool) -> None:
        self.plain: list[tuple[str, ...] | None] = [None] * 4
        self.masked: list[Template | None] = [None] * 4
        form = tool.extra.pop(PROMPT_FORM, None)
        if form is not None:  # made in C with the tool (masking._compiled_forms): the same texts
            full_lits, full_slots, lits, slots, spec_texts, self.text = form
            self.full, self.template, self.spec_texts = Template(full_lits, full_slots), Template(lits, slots), \
                list(spec_texts)
            return
        shown = tool_for_prompt(tool.spec)
        props = list(shown["parameters"]["properties"].values())
        self.spec_texts = [_SPACED(s) for s in props]
        if holds_its_characters(tool.text):  # the text: the template filled, not a second dump
            self.full, self.template = compile_template(shown, _SPACED, self.spec_texts, source=tool.text, dumped="")
            self.text = self.full.fill([encode_basestring(n)[1:-1] for n in (tool.name, *tool.params)],
                                       self.spec_texts)
        else:
            self.text = _SPACED(shown)
            self.full, self.template = compile_template(shown, _SPACED, self.spec_texts, source=tool.text,
                                                        dumped=self.text)

    def masked_template(self, position: int) -> Template:
        """The masked form's template at ``position`` (``2 * (not first) + (last)``): the tool's
        name-slot template with the list's punctuation around it."""
        template = self.masked[position]
        if template is None:
            template = self.masked[position] = Template(dressed(self.template.lits, position), self.template.slots)
        return template


def dressed(lits: Sequence[str], position: int) -> list[str]:
    """A tool's literal pieces with the list's punctuation around them at ``position``
    (``2 * (not first) + (last)``)."""
    out = list(lits)
    out[0], out[-1] = _LEADS[position >> 1] + out[0], out[-1] + _TRAILS[position & 1]
    return out


def _shown(tool: CompiledTool) -> _Shown:
    s = tool.extra.get("prompt")
    if s is None:
        s = tool.extra["prompt"] = _Shown(tool)
    return s


_LEADS = ("[", " ")  # before the first tool / the others
_TRAILS = (",", "]\n")  # after the tools but the last / the last


def _tool_fragments(view: ToolView, masked: bool, position: int, out: list[str]) -> None:
    """Append the fragments of one shown tool; ``position`` is ``2 * (not first) + (last)``."""
    shown = view.tool.extra.get("prompt") or _shown(view.tool)
    lead, trail = _LEADS[position >> 1], _TRAILS[position & 1]
    if not masked:  # original names: the tool's text, its middle shared by every position
        frags = shown.plain[position]
        if frags is None:
            head, middle, tail = cut_ends(shown.text)
            frags = shown.plain[position] = tuple(f for f in (lead + head, middle, tail + trail) if f)
        out.extend(frags)
        return
    if view.overrides:  # perturbed defaults: this row's own spec texts
        specs = list(shown.spec_texts)
        for i, spec in view.overrides.items():
            specs[i] = _SPACED(prompt_spec(spec))
        lits, slots = _merge_specs(shown.full, specs)
        lits[0], lits[-1] = lead + lits[0], lits[-1] + trail
        template = Template(lits, slots)
    else:
        template = shown.masked_template(position)
    out.extend(template.pieces(view.names))  # masked names always stand alone


def _merge_specs(full: Any, specs: Sequence[str]) -> tuple[list[str], list[int]]:
    lits, slots, cur = [], [], [full.lits[0]]
    for k, slot in enumerate(full.slots):
        if slot >= 0:
            lits.append("".join(cur))
            slots.append(slot)
            cur = [full.lits[k + 1]]
        else:
            cur.extend((specs[-slot - 1], full.lits[k + 1]))
    lits.append("".join(cur))
    return lits, slots


def isolated(name: str, _known: dict[str, bool] = {}) -> bool:  # noqa: B006 (a deliberate memo)
    """Can ``name``, between JSON quotes, be tokenized on its own? (starts and ends with a
    letter or digit, only ``A-Za-z0-9_.`` inside; every masked name does)."""
    ok = _known.get(name)
    if ok is None:
        if len(_known) > 100_000:
            _known.clear()
        ok = _known[name] = _ISOLATED.fullmatch(name) is not None
    return ok


def _interleave(lits: Sequence[str], slots: Sequence[int], names: Sequence[str], out: list[str]) -> None:
    """``lits[0] names[slots[0]] lits[1] ...`` as fragments, every slot being inside JSON
    quotes. A name that cannot stand alone as tokens (see :func:`isolated`) is merged,
    JSON-escaped, into its neighbours."""
    cur = lits[0]
    for k, slot in enumerate(slots):
        name = names[slot]
        if isolated(name):
            if cur:
                out.append(cur)
            out.append(name)
            cur = lits[k + 1]
        else:
            cur = cur + encode_basestring(name)[1:-1] + lits[k + 1]
    if cur:
        out.append(cur)


def query_text(messages: Sequence[dict[str, str]]) -> str:
    """The query block: a single user turn as it is; a conversation as ``role: content`` lines,
    the turns after the last user turn included (earlier calls, tool results), so that a target
    following a tool result sees it."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise ValueError("conversation has no user turn")
    last = users[-1]
    if last == 0 and len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def prompt_fragments(view: RowView, messages: Sequence[dict[str, str]]) -> list[str]:
    """The Hammer prompt of a row as fragments (see the module doc); ``view.messages``, when
    set, replaces ``messages``."""
    out = [HEAD]
    tools = view.tools
    if not tools:
        out.append("[]\n")
    last, masked = len(tools) - 1, view.masked
    for j, tv in enumerate(tools):
        _tool_fragments(tv, masked, 2 * (j > 0) + (j == last), out)
    query = query_text(view.messages if view.messages is not None else messages)
    if query[:1].strip() and query[-1:].strip():
        out.extend((MID, query + "\n", TAIL))
    else:  # leading/trailing whitespace: no safe cut around the query
        out.append(MID + query + "\n" + TAIL)
    return out


_CALL_OPEN, _NEXT_CALL, _ARGS_OPEN = '```\n[{"name": "', '}}, {"name": "', '", "arguments": {'


def target_fragments(view: RowView) -> list[str]:
    """The answer as fragments: ```` ```\n[{"name": ..., "arguments": {...}}]\n``` ````."""
    if not view.calls:
        return [NO_CALL_TARGET]
    lits: list[str] = []
    names: list[str] = []
    cur = _CALL_OPEN
    for ci, (name, args) in enumerate(view.calls):
        if ci:
            cur += _NEXT_CALL
        lits.append(cur)
        names.append(name)
        cur = _ARGS_OPEN
        for ai, (key, value) in enumerate(args):
            lits.append(cur + '"' if not ai else cur + ', "')
            names.append(key)
            cur = '": ' + value_json(value, compact=False)
    lits.append(cur + "}}]\n```")
    if view.masked:  # masked names always stand alone
        out: list[str] = [None] * (2 * len(names) + 1)  # type: ignore[list-item]
        out[::2], out[1::2] = lits, names
        return out
    out = []
    _interleave(lits, range(len(names)), names, out)
    return out


_CACHE = ToolCache(max_size=10_000)


def render_prompt(messages: list[dict[str, str]], tools: list[dict[str, Any]]) -> str:
    """The Hammer user prompt for plain tool dicts (serving, tokenizer training)."""
    compiled = [_CACHE.get(dumps(t), t) for t in tools]
    return "".join(prompt_fragments(plain_view(compiled, []), messages))  # type: ignore[arg-type]


def render_target(calls: list[dict[str, Any]]) -> str:
    """The answer: the JSON list of calls in a ``` fence (``[]`` for no call)."""
    return "".join(target_fragments(RowView([], [(c["name"], list(c["arguments"].items())) for c in calls])))


__all__ = ["FORMAT_INSTRUCTION", "HEAD", "MID", "NO_CALL_TARGET", "SAFE_CUT", "TAIL", "TASK_INSTRUCTION",
           "cut_ends", "isolated", "prompt_fragments", "prompt_spec", "query_text", "render_prompt", "render_target",
           "target_fragments", "tool_for_prompt", "tools_for_prompt"]

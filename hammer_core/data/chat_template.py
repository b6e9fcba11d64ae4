"""The exported chat template: the prompt the model was trained on, as a Jinja chat template.

Every exported model folder carries its tokenizer with this template, so that::

    tokenizer.apply_chat_template(messages, tools=[{"type": "function", "function": spec}, ...],
                                  add_generation_prompt=True, tokenize=True)

gives the token ids of the prompt part of the prepared rows (``input_ids[:n_prompt]``), and a
server that renders chat requests with it (vLLM, SGLang: both call ``apply_chat_template``)
conditions the model on the text it was trained on.

``prepare.prompt_format: hammer``
    Hammer's prompt (:mod:`hammer_core.data.prompts`) as the user turn of the base tokenizer's own
    template: that template's text around a user turn (its :func:`~hammer_core.data.tokenization.chat_wrap`
    prefix and suffix, taken once, as literal text -- as prepare did) around ``HEAD + tools JSON +
    "\\n" + MID + query block + "\\n" + TAIL``. The tools are rebuilt as
    :func:`~hammer_core.data.prompts.tools_for_prompt` shows them (``x-`` keys of a parameter dropped,
    ``default is '<v>'`` appended to its description) and dumped with ``tojson``; the query block
    is :func:`~hammer_core.data.prompts.query_text` (one user turn as it is, a conversation as
    ``role: content`` lines, an assistant turn with ``tool_calls`` as the compact JSON list of
    its calls, the text beside them dropped, as ingest writes it).
``prepare.prompt_format: chat_template``
    The base tokenizer's own template, after a preamble that replaces ``tools`` with the same
    shown tools (what :func:`~hammer_core.data.tokenization.openai_tools` passed at prepare time).

When is it token-exact? With Hugging Face's Jinja environment (``apply_chat_template`` of
transformers, which vLLM and SGLang call): its ``tojson`` is ``json.dumps(x, ensure_ascii=False)``,
Python's own separators, key order kept, no HTML escaping -- the dump prepare used. Jinja2's
built-in ``tojson`` (sorted keys, ``<>&'`` escaped) and other engines (llama.cpp's minja) are not
that; there the text may differ. And the request must carry what training saw:

* each function spec with its keys in the order of the canonical row (``name``, ``description``,
  ``parameters`` as ingest writes them -- the order pydantic gives them in vLLM's OpenAI server
  too) and no extra keys (vLLM adds none that are set; a ``null`` it adds for an absent
  ``description`` would show);
* values as JSON gives them to Python (a default is shown with Python's ``str``, so ``True``
  is ``'True'``, as in training);
* an assistant turn's ``tool_calls`` with ``arguments`` as an object (vLLM parses OpenAI's JSON
  string into one before rendering; a string is refused with an error rather than shown
  differently);
* message contents as text (vLLM joins OpenAI text parts with newlines, as ingest does).

Under those conditions it is exact for any tools, names, values and unicode; tests check it
token for token against prepared rows (masked and not, defaults, irrelevance rows, conversations).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from hammer_core.data.prompts import HEAD, MID, TAIL

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TEMPLATE_FILE = "chat_template.jinja"


def literal(text: str) -> str:
    """``text`` as a Jinja string literal (Jinja reads its backslash escapes as Python's)."""
    return json.dumps(text, ensure_ascii=False)


#: ``shown``: the tools as training showed them (:func:`hammer_core.data.prompts.tools_for_prompt`),
#: each as ``{"type": "function", "function": <shown spec>}``. ``dict(pairs)`` keeps the first
#: position of a repeated key and its last value: Python's ``spec["description"] = ...``.
SHOWN_TOOLS = """\
{%- set ns = namespace(tools=[]) %}
{%- for t in (tools or []) %}
  {%- set f = t['function'] if t['function'] is defined else t %}
  {%- set params = f['parameters'] if f['parameters'] is defined else {} %}
  {%- set ps = namespace(props=[]) %}
  {%- for p, s in (params['properties'] if params['properties'] is defined else {}).items() %}
    {%- if s is mapping %}
      {%- set ks = namespace(pairs=[]) %}
      {%- for k, v in s.items() %}
        {%- if not (k is string and k.startswith('x-')) %}{% set ks.pairs = ks.pairs + [[k, v]] %}{% endif %}
      {%- endfor %}
      {%- set s = dict(ks.pairs) %}
      {%- if s['default'] is defined and s['default'] is not none and s['default'] != '' %}
        {%- set desc = ((s['description'] if s['description'] is defined else '') ~ '').rstrip() %}
        {%- set note = "default is '" ~ s['default'] ~ "'" %}
        {%- if (note | lower) not in (desc | lower) %}
          {%- set sep = ' ' if desc.endswith('.') else ', ' %}
          {%- set s = dict(ks.pairs + [['description', ((desc ~ sep) if desc else '') ~ note]]) %}
        {%- endif %}
      {%- endif %}
    {%- endif %}
    {%- set ps.props = ps.props + [[p, s]] %}
  {%- endfor %}
  {%- set shown = dict(f.items() | list + [['parameters', dict(params.items() | list + [['properties', dict(ps.props)]])]]) %}
  {%- set ns.tools = ns.tools + [{'type': 'function', 'function': shown}] %}
{%- endfor %}
"""

#: The query block (:func:`hammer_core.data.prompts.query_text`).
QUERY = """\
{%- set users = messages | selectattr('role', 'equalto', 'user') | list %}
{%- if not users %}{{ raise_exception('conversation has no user turn') }}{% endif %}
{%- if messages | length == 1 %}
  {{- messages[0]['content'] }}
{%- else %}
  {%- for m in messages %}
    {%- if not loop.first %}{{- '\\n' }}{% endif %}
    {%- if m['role'] == 'assistant' and m['tool_calls'] is defined and m['tool_calls'] %}
      {%- set cs = namespace(calls=[]) %}
      {%- for c in m['tool_calls'] %}
        {%- set c = c['function'] if c['function'] is defined else c %}
        {%- if c['arguments'] is string %}{{ raise_exception('tool_calls arguments must be objects, not JSON strings') }}{% endif %}
        {%- set cs.calls = cs.calls + [{'name': c['name'], 'arguments': c['arguments']}] %}
      {%- endfor %}
      {{- m['role'] ~ ': ' ~ (cs.calls | tojson(separators=(',', ':'))) }}
    {%- else %}
      {{- m['role'] ~ ': ' ~ (m['content'] if m['content'] is not none else '') }}
    {%- endif %}
  {%- endfor %}
{%- endif %}
"""


def hammer_template(tokenizer: PreTrainedTokenizerBase) -> str:
    """The ``hammer`` format's template for ``tokenizer`` (its own template's wrap, if any)."""
    from hammer_core.data.tokenization import chat_wrap

    prefix, suffix = chat_wrap(tokenizer) or ("", "")  # what prepare wraps the prompt in
    bare = _suffix_without_generation(tokenizer, prefix, suffix)
    return (SHOWN_TOOLS
            + "{{- " + literal(prefix + HEAD) + " }}\n"
            + "{{- ns.tools | map(attribute='function') | list | tojson }}\n"
            + "{{- " + literal("\n" + MID) + " }}\n"
            + QUERY
            + "{{- " + literal("\n" + TAIL) + " }}\n"
            + "{%- if add_generation_prompt %}{{- " + literal(suffix) + " }}"
            + "{%- else %}{{- " + literal(bare) + " }}{%- endif %}\n")


def _suffix_without_generation(tokenizer: PreTrainedTokenizerBase, prefix: str, suffix: str) -> str:
    """The template's text after a lone user turn without the generation prompt (``suffix`` when
    that cannot be told: no template, or it does not end the same way)."""
    if not getattr(tokenizer, "chat_template", None):
        return suffix
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                         add_generation_prompt=False)
    return text[len(prefix) + 1:] if text.startswith(prefix + "x") else suffix


def tools_template(tokenizer: PreTrainedTokenizerBase) -> str:
    """The ``chat_template`` format's template: the tokenizer's own, shown tools in ``tools``."""
    from hammer_core.data.tokenization import check_chat_template_tools

    check_chat_template_tools(tokenizer)
    return SHOWN_TOOLS + "{%- if tools is not none and tools is defined %}{% set tools = ns.tools %}{% endif %}\n" \
        + tokenizer.chat_template


def exported_template(tokenizer: PreTrainedTokenizerBase, prompt_format: str) -> str:
    """The template that renders a request as the model's training prompt (see the module doc)."""
    if prompt_format == "chat_template":
        return tools_template(tokenizer)
    if prompt_format == "hammer":
        return hammer_template(tokenizer)
    raise ValueError(f"unknown prompt_format {prompt_format!r}")


def with_template(tokenizer: PreTrainedTokenizerBase, prompt_format: str) -> PreTrainedTokenizerBase:
    """A copy of ``tokenizer`` whose chat template is :func:`exported_template`."""
    import copy

    out = copy.deepcopy(tokenizer)
    out.chat_template = exported_template(tokenizer, prompt_format)
    return out


__all__ = ["TEMPLATE_FILE", "exported_template", "hammer_template", "tools_template", "with_template"]

"""The export stage: "1 + N" -- one base model, one standard PEFT LoRA adapter per task.

Each task's gated CGC-LoRA experts collapse into one ordinary LoRA (see
:mod:`hammer_core.model.cgc_lora.export`). Output folder::

    adapters/<task>/adapter_config.json + adapter_model.safetensors   (plain PEFT format)
                   + the tokenizer files
    tokenizer/                        (with chat_template.jinja: the training prompt, see below)
    chat_template.jinja               (the same template, for ``--chat-template``)
    base_model/                       (tiny preset only: the random-init base they apply to)
    merged/<task>/                    (``hammer export --merged``: the task merged into the base,
                                       a plain HF model folder with its tokenizer)
    SERVING.md + serving.json         (vLLM and SGLang launch lines for the base + N adapters)
    export_manifest.json              {"base_model", "tasks", "adapters": {task: "adapters/<task>"},
                                       "merged"?: {task: "merged/<task>"}, "prompt_format", ...}

``peft.PeftModel.from_pretrained(base, "adapters/<task>")`` loads any of them; multi-LoRA
servers can serve all N next to one base (here: :func:`hammer_core.model.trained.load_exported`).
Every tokenizer written here carries the chat template of :mod:`hammer_core.data.chat_template`:
``apply_chat_template(messages, tools=...)`` gives the prompt ids the model was trained on, in the
training run's ``prepare.prompt_format``.

Serving with vLLM / SGLang (:func:`serving_facts`): the launch lines name the base, every adapter,
the template and the smallest ``--max-lora-rank`` vLLM accepts that holds the largest adapter rank
(for CGC-LoRA, ``(n_common + n_specific) * r_expert``). An adapter vLLM would refuse -- a rank above
its largest allowed value, DoRA, ``modules_to_save``, a trained bias -- stops the export with a
message that says which and why.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hammer_core.artifacts import atomic_write_json, atomic_write_text
from hammer_core.config import ConfigError
from hammer_core.data.chat_template import TEMPLATE_FILE, with_template
from hammer_core.model.cgc_lora import export_task_adapter, save_merged_task
from hammer_core.model.trained import EXPORT_MANIFEST, load_trained
from hammer_core.paths import task_dirnames

@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict[str, Any]


def export_adapters(train_dir: str | Path, out_dir: str | Path, *, merged: bool = False) -> ExportResult:
    """One standard PEFT LoRA adapter per task (``adapters/<task>``) beside the base reference and
    the tokenizer; with ``merged``, also each task merged into the base weights as a plain HF
    model folder (``merged/<task>``: no PEFT needed to serve it, at the base model's size)."""
    train_dir, out = Path(train_dir), Path(out_dir)
    summary = json.loads((train_dir / "train_summary.json").read_text())
    model, tokenizer = load_trained(train_dir)
    try:  # before anything is written: two tasks must not share one adapter folder
        dirnames = task_dirnames(model.config.tasks)
    except ValueError as err:
        raise ConfigError(f"cannot export {train_dir}: {err}") from None
    out.mkdir(parents=True, exist_ok=True)

    prompt_format = summary.get("prompt_format", "hammer")  # older train folders: Hammer's, the default
    tokenizer = with_template(tokenizer, prompt_format)
    base_ref = summary["base_model"]
    if (train_dir / "base_model").exists():  # tiny preset: ship the exact base beside the adapters
        shutil.copytree(train_dir / "base_model", out / "base_model", dirs_exist_ok=True)
        base_ref = "base_model"  # relative to the export folder
    tokenizer.save_pretrained(out / "tokenizer")
    atomic_write_text(out / TEMPLATE_FILE, tokenizer.chat_template)

    adapters = {}
    for task in model.config.tasks:
        rel = f"adapters/{dirnames[task]}"
        export_task_adapter(model, task, out / rel, base_model_name_or_path=base_ref)
        tokenizer.save_pretrained(out / rel)  # the adapter's own folder renders its prompts too
        adapters[task] = rel
    facts = serving_facts(out, base_ref, adapters, tokenizer, prompt_format)  # refuses before the manifest
    manifest = {"format": "peft-lora", "base_model": base_ref, "tasks": model.config.tasks,
                "adapters": adapters, "tokenizer": "tokenizer", "chat_template": TEMPLATE_FILE,
                "prompt_format": prompt_format, "serving": SERVING_JSON,
                "rank": (model.config.n_common + model.config.n_specific) * model.config.r_expert}
    if merged:
        manifest["merged"] = {}
        for task in model.config.tasks:
            rel = f"merged/{dirnames[task]}"
            save_merged_task(model, task, out / rel)
            tokenizer.save_pretrained(out / rel)  # a self-contained model folder
            manifest["merged"][task] = rel
    atomic_write_json(out / SERVING_JSON, facts)
    atomic_write_text(out / SERVING_MD, serving_markdown(facts))
    atomic_write_json(out / EXPORT_MANIFEST, manifest)
    return ExportResult(out, manifest)


# ------------------------------------------------------------------------ vLLM / SGLang

#: vLLM's accepted ``--max-lora-rank`` values (``MaxLoRARanks`` in ``vllm/config/lora.py``).
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
SERVING_JSON, SERVING_MD = "serving.json", "SERVING.md"


def vllm_max_lora_rank(adapter_dirs: dict[str, Path]) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds every adapter's rank; a
    :class:`ConfigError` naming the adapter when none does or when it uses an option vLLM's LoRA
    loader refuses (DoRA, ``modules_to_save``, a trained bias, a PEFT type other than LoRA)."""
    ranks = {}
    for task, folder in adapter_dirs.items():
        cfg = json.loads((Path(folder) / "adapter_config.json").read_text())
        refused = [why for bad, why in (
            (cfg.get("peft_type", "LORA") != "LORA", f"peft_type {cfg.get('peft_type')!r} (vLLM serves LoRA only)"),
            (cfg.get("use_dora"), "DoRA (use_dora: vLLM does not support it)"),
            (cfg.get("modules_to_save"), f"modules_to_save {cfg.get('modules_to_save')} (fully trained "
                                         "modules beside the LoRA: vLLM refuses them)"),
            (cfg.get("bias", "none") != "none", f"bias {cfg.get('bias')!r} (trained biases: vLLM refuses them)"))
            if bad]
        if refused:
            raise ConfigError(f"vLLM cannot serve the adapter of task {task!r} ({folder}): {'; '.join(refused)}")
        ranks[task] = max([int(cfg["r"]), *map(int, (cfg.get("rank_pattern") or {}).values())])
    task = max(ranks, key=ranks.get)
    fits = [r for r in VLLM_MAX_LORA_RANKS if r >= ranks[task]]
    if not fits:
        raise ConfigError(f"vLLM cannot serve the adapter of task {task!r}: its rank {ranks[task]} is above the "
                          f"largest --max-lora-rank vLLM accepts ({VLLM_MAX_LORA_RANKS[-1]}; allowed: "
                          f"{', '.join(map(str, VLLM_MAX_LORA_RANKS))}); a CGC-LoRA adapter's rank is "
                          "(n_common + n_specific) * r_expert: train with fewer or smaller experts")
    return fits[0]


def tool_call_parser(tokenizer: Any, prompt_format: str) -> str | None:
    """vLLM's built-in tool-call parser that reads what the trained model writes; None when none
    does (Hammer's fenced JSON list: read it with :func:`hammer_core.evaluation.parsing.parse_calls`)."""
    if prompt_format != "chat_template":
        return None
    from hammer_core.data.tokenization import chat_template_texts

    tool = {"name": "probe_fn", "description": "probe", "parameters": {"type": "object", "properties": {}}}
    _, answer = chat_template_texts(tokenizer, [{"role": "user", "content": "x"}], [tool],
                                    [{"name": "probe_fn", "arguments": {}}])
    answer = answer.lstrip()
    for start, parser in (("<tool_call>", "hermes"), ("[TOOL_CALLS]", "mistral"), ("<|python_tag|>", "llama3_json"),
                          ('{"name"', "llama3_json")):
        if answer.startswith(start):
            return parser
    return None


def serving_facts(out: Path, base_ref: str, adapters: dict[str, str], tokenizer: Any,
                  prompt_format: str) -> dict[str, Any]:
    """What serving the export needs, and the vLLM and SGLang launch lines (absolute paths)."""
    import shlex

    from hammer_core.model.presets import resolve

    out = out.resolve()
    base = str(out / base_ref) if (out / base_ref).is_dir() else resolve(base_ref)  # a preset: its converted folder
    paths = {task: str(out / rel) for task, rel in adapters.items()}
    rank = vllm_max_lora_rank(paths)
    parser = tool_call_parser(tokenizer, prompt_format)
    modules = [f"{task}={path}" for task, path in paths.items()]
    template, tok = str(out / TEMPLATE_FILE), str(out / "tokenizer")  # the training tokenizer (a tiny base has none)
    vllm = ["vllm", "serve", base, "--tokenizer", tok, "--enable-lora", "--lora-modules", *modules,
            "--max-lora-rank", str(rank), "--max-loras", str(len(modules)), "--chat-template", template]
    sglang = ["python", "-m", "sglang.launch_server", "--model-path", base, "--tokenizer-path", tok, "--enable-lora",
              "--lora-paths", *modules, "--max-lora-rank", str(rank), "--chat-template", template]
    if parser is not None:
        vllm += ["--enable-auto-tool-choice", "--tool-call-parser", parser]
    return {"base_model": base, "adapters": paths, "chat_template": template, "prompt_format": prompt_format,
            "max_lora_rank": rank, "vllm_max_lora_ranks": list(VLLM_MAX_LORA_RANKS), "tool_call_parser": parser,
            "vllm": shlex.join(vllm), "sglang": shlex.join(sglang)}


def serving_markdown(facts: dict[str, Any]) -> str:
    """SERVING.md: the launch lines and how to read the model's calls."""
    parser = facts["tool_call_parser"]
    if parser is None:
        calls = ("The model writes Hammer's format: the calls as a JSON list in a ``` fence (`[]`: no call). "
                 "None of vLLM's built-in tool-call parsers (hermes, llama3_json, mistral, pythonic, ...) reads "
                 "that, so the vLLM line has no `--enable-auto-tool-choice`: send `tools` with "
                 '`"tool_choice": "none"` (vLLM refuses `"auto"` without a parser; the tools are still '
                 "rendered into the prompt) and read the calls from the reply's `content` with this project's "
                 "parser, `hammer_core.evaluation.parsing.parse_calls(text)` (or score a file of replies with "
                 "`hammer eval score`).")
    else:
        calls = (f"The model writes its base template's tool-call format, which vLLM's `{parser}` parser reads: "
                 "the calls come back as `tool_calls`.")
    rows = "\n".join(f"| `{task}` | `{path}` |" for task, path in facts["adapters"].items())
    return f"""# Serving this export

One base model plus {len(facts["adapters"])} LoRA adapter(s), one per task; a request picks its task's
adapter by name (`"model": "<task>"`).

- base model: `{facts["base_model"]}`
- chat template: `{facts["chat_template"]}` (the training prompt, `prepare.prompt_format: {facts["prompt_format"]}`:
  `apply_chat_template(messages, tools=[{{"type": "function", "function": spec}}, ...])` gives the
  token ids the model was trained on; conditions in `hammer_core/data/chat_template.py`)
- `--max-lora-rank {facts["max_lora_rank"]}`: the smallest value vLLM accepts
  ({", ".join(map(str, facts["vllm_max_lora_ranks"]))}) that holds the largest adapter rank

| task | adapter |
|---|---|
{rows}

## vLLM

```bash
{facts["vllm"]}
```

## SGLang

```bash
{facts["sglang"]}
```

## Tool calls

{calls}
"""

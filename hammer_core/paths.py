"""Where the project's bundled files live, and the folder names of task labels (no heavy
imports: the CLI reads these at start-up).

``HAMMER_DATA_DIR`` overrides the data folder (sample corpus, tiny tokenizer, configs).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = Path(os.environ.get("HAMMER_DATA_DIR", Path(__file__).resolve().parents[1] / "data"))
TINY_TOKENIZER_DIR = DATA_DIR / "tokenizer"
DEMO_CONFIG = DATA_DIR / "configs" / "demo.yaml"
#: ``hammer demo --model NAME``: the demo config of each model preset (the first is the default)
DEMO_CONFIGS = {"hammer-tiny-qwen2": DEMO_CONFIG, "smollm2-135m": DATA_DIR / "configs" / "demo-smollm2.yaml"}
#: questions the demo asks the registered model once it is registered (never in its training data)
DEMO_QUESTIONS = DATA_DIR / "demo_questions.jsonl"


def safe_dirname(task: str) -> str:
    """The folder name of a task label (``adapters/<name>``, ``merged/<name>``): letters,
    digits, ``-``, ``_`` and ``.`` are kept, anything else becomes ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in task)


def task_dirnames(tasks: list[str]) -> dict[str, str]:
    """``{task: safe_dirname(task)}``; ValueError naming both labels when two tasks map to one
    folder name (``trip/eu`` and ``trip eu``: one task would ship the other's adapter), and
    naming the label when its name is no folder of its own (``""``, ``.``, ``..``)."""
    names: dict[str, str] = {}
    owner: dict[str, str] = {}
    for task in dict.fromkeys(tasks):
        name = safe_dirname(task)
        if name in ("", ".", ".."):
            raise ValueError(f"task label {task!r} gives no usable folder name ({name!r}): "
                             "use letters, digits, '-', '_' or '.'")
        if name in owner:
            raise ValueError(f"task labels {owner[name]!r} and {task!r} both become the folder "
                             f"name {name!r} (adapters/<task>): give them labels that differ in "
                             "letters, digits, '-', '_' or '.'")
        owner[name] = task
        names[task] = name
    return names

"""Where the project's bundled files live (no heavy imports: the CLI reads these at start-up).

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
DEMO_QUESTIONS = DATA_DIR / "sample" / "questions.jsonl"

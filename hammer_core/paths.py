"""Where the project's bundled files live (no heavy imports: the CLI reads these at start-up).

``HAMMER_DATA_DIR`` overrides the data folder (sample corpus, tiny tokenizer, configs).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = Path(os.environ.get("HAMMER_DATA_DIR", Path(__file__).resolve().parents[1] / "data"))
TINY_TOKENIZER_DIR = DATA_DIR / "tokenizer"
DEMO_CONFIG = DATA_DIR / "configs" / "demo.yaml"

"""The one switch that turns the compiled kernels off: ``HAMMER_FASTPREP=0`` (or false/no/off).

Read at call time by every caller of a compiled path (masking's bulk hashes, the prepare
kernel, the compiled BPE through :func:`hammer_core.data.compiled.fastprep.enabled`); the Python
paths then run and write the same bytes. Imports nothing from ``hammer_core``.
"""

from __future__ import annotations

import os

__all__ = ["compiled_switched_off"]


def compiled_switched_off() -> bool:
    """``HAMMER_FASTPREP=0`` (or false/no/off): every compiled path off, the Python one runs."""
    return os.environ.get("HAMMER_FASTPREP", "1").strip().lower() in ("0", "false", "no", "off")

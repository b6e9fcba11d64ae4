"""The prepare stage: split, irrelevance synthesis, masking, rendering, tokenization.

The stage lives in :mod:`hammer_core.data.prepare.stage`; this package re-exports its public names.
"""

from hammer_core.data.prepare.stage import (BLOCK_ROWS, ROW_GROUP_ROWS, Engine, PrepareResult, Recipe,
                                            default_workers, is_eval, load_prepared, prepare, split_rows)

__all__ = ["BLOCK_ROWS", "ROW_GROUP_ROWS", "Engine", "PrepareResult", "Recipe", "default_workers", "is_eval",
           "load_prepared", "prepare", "split_rows"]

"""The prepare stage: split, irrelevance synthesis, masking, rendering, tokenization.

The package, cut along the stage's seams (each module says what it holds):

* :mod:`~hammer_core.data.prepare.stage` -- :func:`prepare`, the driver of the two passes;
* :mod:`~hammer_core.data.prepare.engine` -- :class:`Recipe` and :class:`Engine`, the per-block
  work on the Python path; :mod:`~hammer_core.data.prepare.kernel_path` -- its compiled path;
* :mod:`~hammer_core.data.prepare.rows` -- a block's rows and results, the split by row id;
* :mod:`~hammer_core.data.prepare.runners` -- the process-pool and Dask runners;
* :mod:`~hammer_core.data.prepare.synthesis` -- the irrelevance selection and pass 2's tasks;
* :mod:`~hammer_core.data.prepare.blockio` -- input blocks, output row groups (and their fixed sizes).
"""

from hammer_core.data.prepare.engine import Engine, Recipe
from hammer_core.data.prepare.rows import is_eval, split_rows
from hammer_core.data.prepare.stage import PrepareResult, default_workers, load_prepared, prepare

__all__ = ["Engine", "PrepareResult", "Recipe", "default_workers", "is_eval", "load_prepared", "prepare",
           "split_rows"]

"""The prepare stage's compiled kernels (``_fastprep``, ``_fastbpe``) and their Python glue.

Both extensions are optional (built by ``pip install -e .``); without them, or with
``HAMMER_FASTPREP=0`` (read by :func:`hammer_core.data.masking.compiled_switched_off`), prepare
runs its pure-Python path and writes the same bytes.
"""

"""The prepare stage's compiled kernels (``_fastprep``, ``_fastbpe``) and their Python glue.

Both extensions are optional (built by ``pip install -e .``); without them, or with
``HAMMER_FASTPREP=0`` (the one switch: :mod:`hammer_core.data.compiled.switch`), prepare
runs its pure-Python path and writes the same bytes.
"""

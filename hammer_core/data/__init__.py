"""The data stages: corpora -> ``examples.parquet`` (ingest) -> prepared Parquet (prepare).

Nothing here imports ``model``, ``train``, ``evaluation`` or ``registry``: the stage driver
(:mod:`hammer_core.stages`) loads the tokenizer and hands it to prepare.
"""

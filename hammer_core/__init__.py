"""hammer_core: the plain library behind the Hammer function-calling pipeline (no Prefect here).

One module per concept: ``schema`` (the canonical Arrow schema), ``artifacts`` (Parquet +
manifest, atomic), ``config``, ``formats`` + ``ingest`` + ``validation`` + ``synth``,
``irrelevance``, ``masking``, ``prompts``, ``tokenization``, ``prepare``, ``modeling``,
``cgc_lora``, ``training`` + ``distributed`` + ``train_worker`` + ``sampling`` + ``checkpoint``
+ ``tracking``, ``adapters`` (the "1 + N" export), ``evaluation`` + ``bfcl`` + ``metrics`` +
``robustness`` + ``reports``, ``registry`` (+ ``mlflow_model``), ``serving``, ``stages``,
``caching`` (stage cache keys for the flows), ``paths`` (bundled data locations), ``fastprep``
(the compiled prepare path, ``_fastprep``).
"""

__version__ = "0.1.0"

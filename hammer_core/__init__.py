"""hammer_core: the plain library behind the Hammer function-calling pipeline (no Prefect here).

One module per concept: ``schema`` (the canonical Arrow schema), ``artifacts`` (Parquet +
manifest, atomic), ``config``, ``formats`` + ``ingest`` + ``validation``, ``irrelevance``,
``masking``, ``prompts``, ``tokenization``, ``prepare``, ``modeling``, ``cgc_lora``,
``training``, ``adapters`` (the "1 + N" export), ``evaluation``, ``registry``, ``serving``.
"""

__version__ = "0.1.0"

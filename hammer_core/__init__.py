"""hammer_core: the plain library behind the Hammer function-calling pipeline (no Prefect here).

One package per stage over a thin shared root: ``data`` (formats, ingest, prepare and its compiled
kernels), ``model`` (base models, presets, CGC-LoRA, loading trained models, export), ``train``,
``evaluation`` and ``registry``; the root holds the shared vocabulary (``config``, ``schema``,
``artifacts``, ``paths``, ``locking``, ``bfcl_categories``, ``mlflow_store``) and the stage API
(``caching``, ``stages``). Imports run one way, in that order (see the README's layout section).
"""

__version__ = "0.1.0"

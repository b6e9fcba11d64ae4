"""One validated config drives every stage.

YAML in, a typed :class:`PipelineConfig` out, or one clear error that names the bad key::

    cfg = load_config("data/configs/demo.yaml", overrides=["train.max_steps=20", "seed=3"])

Unknown keys are errors (a typo must not silently fall back to a default). Relative paths
in the file are resolved against the folder of the YAML file, so a config can be run from
anywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hammer_core.bfcl_categories import resolve_categories

TINY_MODEL = "hammer-tiny-qwen2"  # the built-in preset: shipped tokenizer + small random-init Qwen2


class _Strict(BaseModel):
    # allow_inf_nan: a number must be finite (``.inf`` or ``.nan`` would pass ``gt=0`` or no bound
    # at all, then poison training or the promotion gate)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SourceConfig(_Strict):
    path: str = Field(description="file, folder or glob of a corpus, or hf://<dataset id>[:split] "
                                  "(read with the optional `datasets` package)")
    format: Literal["auto", "xlam", "glaive", "sharegpt", "openai", "bfcl", "hammer_testset"] = "auto"
    task: str | None = Field(None, description="CGC-LoRA task cluster (default: the source name)")
    name: str | None = Field(None, description="source name (default: the file stem)")
    max_rows: int | None = Field(None, gt=0, description="read at most this many records (the first ones)")
    max_row_bytes: int = Field(1 << 20, gt=0, description="a raw row larger than this is rejected "
                                                          "(row_too_large)")

    @field_validator("path")
    @classmethod
    def _keep_hf_ids(cls, v: str) -> str:
        """``hf://org/name`` made absolute by path resolution (``/base/hf:/org/name``) is an
        HF dataset id again."""
        match = re.search(r"(?:^|/)hf:/+(?=[^/])", v)
        return "hf://" + v[match.end():] if match else v


class DataConfig(_Strict):
    sources: list[SourceConfig] = Field(default_factory=list, description="corpora to ingest")


class PrepareConfig(_Strict):
    """Hammer's data recipe (see hammer_core/data/prepare.py); every field changes the output except workers."""

    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="held-out share, split by parent row")
    irrelevance_ratio: float = Field(0.1, ge=0.0, lt=1.0,
                                     description="target share of 'no call' rows in the final mix")
    hard_negative_ratio: float = Field(0.0, ge=0.0, lt=1.0,
                                       description="share of the final mix made of hard negatives (the "
                                                   "removed function replaced by a close one from the "
                                                   "corpus); part of irrelevance_ratio")
    mask_prob: float = Field(2 / 3, ge=0.0, le=1.0, description="per-row probability of function masking")
    copies: int = Field(3, ge=1, description="repeat the training mix k times, each with its own masks "
                                             "(Hammer: 3)")
    name_pool_size: int = Field(0, ge=0, description="0: every masked name is a fresh random string "
                                                     "(Hammer); N: names are drawn from N seeded random "
                                                     "strings per kind, so their tokens are cached")
    max_length: int = Field(2048, ge=32, description="token budget of prompt + answer (Hammer's recipe: a 2,048-token "
                                                     "cutoff)")
    length_policy: Literal["reject", "truncate_tools"] = Field(
        "reject", description="over max_length: reject the row (rejects.parquet), or drop distractor "
                              "tools first; the answer is never cut")
    prompt_format: Literal["hammer", "chat_template"] = Field(
        "hammer", description="hammer: Hammer's prompt; chat_template: the tokenizer's own template "
                              "with tools= (slower; the template must render tools)")
    fast_tokenization: bool = Field(True, description="tokenize prompts as cached fragments when that is "
                                                      "exact for the tokenizer (checked); false: whole texts")
    compression: Literal["zstd", "lz4"] = Field(
        "zstd", description="codec of the prepared Parquet files: zstd, or lz4 (files ~1.6x larger, "
                            "~8 % less CPU for the stage and faster to read back; the rows are the same)")
    workers: int = Field(0, ge=0, description="processes (0: one per CPU core but one with the compiled "
                                              "kernel, one per core without it; at most 8); the output "
                                              "does not depend on it")
    seed: int | None = Field(None, description="seed of the split, irrelevance synthesis and masking "
                                               "(default: the top-level seed)")

    @model_validator(mode="after")
    def _hard_negatives_within_irrelevance(self) -> "PrepareConfig":
        if self.hard_negative_ratio > self.irrelevance_ratio:
            raise ValueError(f"hard_negative_ratio ({self.hard_negative_ratio}) is part of irrelevance_ratio "
                             f"({self.irrelevance_ratio}) and cannot exceed it")
        return self


class ModelConfig(_Strict):
    name_or_path: str = Field(TINY_MODEL, description=f"HF model id or local path, or {TINY_MODEL!r}")
    tokenizer: str | None = Field(None, description="defaults to name_or_path")
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    revision: str | None = None


class AdapterConfig(_Strict):
    kind: Literal["cgc_lora"] = "cgc_lora"
    n_common: int = Field(2, ge=0)
    n_specific: int = Field(1, ge=0)
    r_expert: int = Field(4, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | str = "all-linear"
    gate_dim: int = Field(16, ge=1)
    shared_gate: bool = True
    variant: Literal["cgc", "multitask_lora", "per_task_lora"] = Field(
        "cgc", description="cgc, or an ablation baseline built from the same numbers: multitask_lora (one "
                           "LoRA for all tasks) / per_task_lora (one LoRA per task), both of rank "
                           "(n_common + n_specific) * r_expert; see CGCLoraConfig.for_variant")

    @model_validator(mode="after")
    def _some_expert(self) -> "AdapterConfig":
        if self.n_common + self.n_specific == 0:
            raise ValueError("adapter needs at least one expert: n_common + n_specific must be > 0")
        return self


class DeepSpeedConfig(_Strict):
    """DeepSpeed ZeRO settings of the train stage (see :mod:`hammer_core.train.distributed`)."""

    zero_stage: Literal[0, 1, 2, 3] = Field(0, description="0: plain data parallel; 1: shard optimizer "
                                                           "state; 2: + gradients; 3: + parameters")
    offload_optimizer: Literal["none", "cpu"] = Field("none", description="optimizer state in CPU memory "
                                                                          "(zero_stage >= 1)")
    offload_param: Literal["none", "cpu"] = Field("none", description="parameters in CPU memory (zero_stage 3)")

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> "DeepSpeedConfig":
        if self.offload_optimizer != "none" and self.zero_stage < 1:
            raise ValueError("offload_optimizer needs zero_stage >= 1")
        if self.offload_param != "none" and self.zero_stage != 3:
            raise ValueError("offload_param needs zero_stage 3")
        return self


class TrainConfig(_Strict):
    max_steps: int = Field(60, ge=1, description="optimizer steps")
    batch_size: int = Field(8, ge=1, description="per-process micro-batch (global batch: "
                                                 "batch_size * grad_accum * processes)")
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(5, ge=0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = Field(1.0, gt=0)
    log_every: int = Field(5, ge=1, description="metrics.jsonl / console every k steps (MLflow: every step)")
    gradient_checkpointing: bool = False
    # processes
    nproc: int = Field(1, ge=1, description="worker processes per node (GPUs per node on a GPU machine)")
    nnodes: int = Field(1, ge=1, description="nodes; > 1 needs rdzv_endpoint (torchrun) or hostfile "
                                             "(deepspeed) and an output folder every node shares")
    rdzv_endpoint: str | None = Field(None, description="host:port of the rendezvous for nnodes > 1 (torchrun)")
    hostfile: str | None = Field(None, description="DeepSpeed hostfile for nnodes > 1 (deepspeed launcher)")
    launcher: Literal["torchrun", "deepspeed"] = "torchrun"
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="compute dtype of the frozen base "
                                                          "(the adapter stays fp32); auto: bf16 on GPUs, fp32 on CPU")
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    # sampling
    task_temperature: float = Field(1.0, gt=0, description="task sampling p_t ~ n_t^(1/T): 1 = natural "
                                                           "mix, larger = closer to uniform over tasks")
    group_by_length: bool = Field(True, description="batch rows of similar length (less padding)")
    length_window: int = Field(8, ge=1, description="length grouping window, in global micro-batches")
    # checkpoints
    checkpoint_every: int = Field(50, ge=0, description="checkpoint every k steps (0: only at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="how many recent checkpoints to keep")
    resume: bool = Field(True, description="continue from the last compatible checkpoint in the output folder")
    track: bool = Field(True, description="log the training live to MLflow (see the registry section)")

    @model_validator(mode="after")
    def _multi_node(self) -> "TrainConfig":
        if self.nnodes > 1 and self.launcher == "torchrun" and not self.rdzv_endpoint:
            raise ValueError("nnodes > 1 with launcher torchrun needs rdzv_endpoint (host:port of node 0)")
        if self.nnodes > 1 and self.launcher == "deepspeed" and not self.hostfile:
            raise ValueError("nnodes > 1 with launcher deepspeed needs a hostfile")
        return self


class EvalConfig(_Strict):
    max_new_tokens: int = Field(96, ge=1)
    batch_size: int = Field(16, ge=1)
    max_examples: int | None = Field(None, ge=1, description="cap on eval rows (None: all)")
    robustness: bool = Field(True, description="Hammer's robustness study: re-run the eval rows with "
                                               "function / parameter / both names replaced by random strings")
    robustness_max_examples: int | None = Field(32, ge=1, description="rows used by the robustness study, "
                                                                      "which costs 3 more generations per row "
                                                                      "(None: all eval rows)")
    bfcl_categories: list[str] = Field(default_factory=list,
                                       description="BFCL categories to generate and score (e.g. simple_python, "
                                                   "live, all); empty: none")
    bfcl_max_examples: int | None = Field(None, ge=1, description="cap on questions per BFCL category")
    bfcl_task: str | None = Field(None, description="task adapter used for BFCL (default: the first task)")
    baseline: bool = Field(False, description="also evaluate the base model zero-shot on the same rows "
                                              "(held-out and BFCL); its metrics are base/<metric>")

    @field_validator("bfcl_categories")
    @classmethod
    def _known_categories(cls, v: list[str]) -> list[str]:
        if v:
            resolve_categories(v)  # raises ValueError naming the unknown category
        return v


class PromotionConfig(_Strict):
    """The champion gate: after registering, alias ``champion`` moves to the new version only
    if it beats the current champion on every listed metric (see hammer_core/registry/promotion.py)."""

    enabled: bool = Field(True, description="run the gate after registration (false: only `candidate`)")
    metrics: dict[str, Literal["max", "min"]] = Field(
        default_factory=lambda: {"call_accuracy": "max", "irrelevance_accuracy": "max"},
        description="eval metrics the new version must beat the champion on: name -> max (higher is "
                    "better) or min (lower is better)")
    min_delta: float = Field(0.0, ge=0.0, description="margin by which every metric must improve "
                                                      "(0: ties are not enough, strictly better is)")

    @field_validator("metrics")
    @classmethod
    def _some_metric(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("the promotion gate needs at least one metric")
        return v


class RegistryConfig(_Strict):
    tracking_uri: str | None = Field(None, description="default: MLFLOW_TRACKING_URI, else a "
                                                         "sqlite store under the output dir")
    local_dir: str = Field(".hammer/mlflow", description="sqlite store + artifacts when no URI is given")
    experiment: str = "hammer"
    model_name: str = "hammer-fc"
    register_model: bool = Field(True, description="register a model version (else only log the run)")
    promotion: PromotionConfig = PromotionConfig()


class ServingConfig(_Strict):
    """Limits of the registered model behind ``mlflow models serve`` (see hammer_core/registry/serving.py).

    Recorded into the registered model's ``model_config``; a request over a limit is an HTTP
    400 naming it, answered before the prompt is tokenized (bytes, tools) or generated (tokens).
    Override them when serving, without re-registering, with MLflow's
    ``SERVING_MODEL_CONFIG='{"max_tools": 32}' mlflow models serve ...``."""

    max_request_bytes: int = Field(262_144, ge=1, description="largest request, as compact JSON (bytes)")
    max_tools: int = Field(64, ge=1, description="most tools one request may offer")
    max_prompt_tokens: int | None = Field(None, ge=1, description="longest prompt in tokens (default: the "
                                                                 "base model's context minus max_new_tokens, "
                                                                 "which also caps a larger value)")
    deadline_s: float = Field(30.0, gt=0, description="seconds a request may take, waiting for the model "
                                                      "included: generation stops there (finish_reason "
                                                      "length); below MLflow's 60 s request timeout")


class OrchestrationConfig(_Strict):
    """How the Prefect flows run the stages (the single-stage CLI commands ignore it)."""

    cache: bool = Field(True, description="skip a stage whose inputs (artifact content hashes) and "
                                          "config are unchanged since it last ran")
    retries: int = Field(2, ge=0, description="retries of a stage on transient failures (I/O, network, "
                                              "registry); data and config errors are never retried")
    retry_delay_seconds: list[float] = Field(default_factory=lambda: [5.0, 30.0],
                                             description="backoff between retries (the last value repeats)")
    task_runner: Literal["local", "dask"] = Field("local", description="where the data stages run their "
                                                                      "shards: local, or Dask (prefect-dask)")
    dask_address: str | None = Field(None, description="scheduler of an existing Dask cluster "
                                                       "(default: a local cluster)")
    dask_workers: int = Field(2, ge=1, description="workers of the local Dask cluster")


class PipelineConfig(_Strict):
    seed: int = 0
    output_dir: str = Field(".hammer/runs/default", description="where every stage writes")
    data: DataConfig = DataConfig()
    prepare: PrepareConfig = PrepareConfig()
    model: ModelConfig = ModelConfig()
    adapter: AdapterConfig = AdapterConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    registry: RegistryConfig = RegistryConfig()
    serving: ServingConfig = ServingConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    @field_validator("output_dir")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("output_dir must not be empty")
        return v

    def fingerprint(self) -> str:
        """Stable hash of the whole config (for lineage tags and caching)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]

    def prepare_seed(self) -> int:
        """The seed of the split, irrelevance synthesis and masking: ``prepare.seed``, else ``seed``."""
        return self.seed if self.prepare.seed is None else self.prepare.seed

    def stage_dir(self, stage: str) -> Path:
        return Path(self.output_dir) / stage


class ConfigError(ValueError):
    """A config file or override that does not validate; the message says what and where."""


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
        cur = nxt
    cur[keys[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (``3`` is an int, ``x`` a string)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, _, text = item.partition("=")
        _set_dotted(raw, key.strip(), yaml.safe_load(text))
    return raw


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    data = raw.get("data")  # anything but a mapping is for validation to name (data: with nothing under it)
    for src in (data.get("sources") if isinstance(data, dict) else None) or []:
        if isinstance(src, dict) and isinstance(src.get("path"), str) and not Path(src["path"]).is_absolute():
            src["path"] = str((base / src["path"]).resolve())


def _format_error(err: ValidationError, origin: str) -> str:
    """One line for one problem (``invalid config X: key: what``), else one line per problem."""
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see data/configs/demo.yaml for every key)"
        problems.append(f"{loc}: {msg}")
    if len(problems) == 1:
        return f"invalid config {origin}: {problems[0]}"
    return "\n".join([f"invalid config {origin}:"] + [f"  - {p}" for p in problems])


def config_from_dict(raw: dict[str, Any], origin: str = "<dict>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, origin)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Load, resolve relative paths against the file's folder, apply overrides, validate."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    _resolve_paths(raw, path.parent)
    raw = apply_overrides(raw, overrides)
    return config_from_dict(raw, origin=str(path))

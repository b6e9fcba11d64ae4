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
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TINY_MODEL = "hammer-tiny-qwen2"  # the built-in preset: shipped tokenizer + small random-init Qwen2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    path: str = Field(description="file, folder or glob of a corpus")
    format: Literal["auto", "xlam"] = "auto"
    task: str | None = Field(None, description="CGC-LoRA task cluster (default: the source name)")
    name: str | None = Field(None, description="source name (default: the file stem)")
    max_rows: int | None = Field(None, gt=0)


class DataConfig(_Strict):
    sources: list[SourceConfig] = Field(default_factory=list, description="corpora to ingest")


class PrepareConfig(_Strict):
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="held-out share, split by parent row")
    irrelevance_ratio: float = Field(0.1, ge=0.0, lt=1.0,
                                     description="target share of 'no call' rows in the final mix")
    mask_prob: float = Field(2 / 3, ge=0.0, le=1.0, description="per-row probability of function masking")
    copies: int = Field(1, ge=1, description="repeat the training mix k times, each with its own masks")
    max_length: int = Field(1024, ge=32, description="token budget of prompt + answer")
    prompt_format: Literal["hammer"] = "hammer"


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

    @model_validator(mode="after")
    def _some_expert(self) -> "AdapterConfig":
        if self.n_common + self.n_specific == 0:
            raise ValueError("adapter needs at least one expert: n_common + n_specific must be > 0")
        return self


class TrainConfig(_Strict):
    max_steps: int = Field(60, ge=1, description="optimizer steps")
    batch_size: int = Field(8, ge=1, description="per-process micro-batch")
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(5, ge=0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = Field(1.0, gt=0)
    log_every: int = Field(5, ge=1)
    gradient_checkpointing: bool = False


class EvalConfig(_Strict):
    max_new_tokens: int = Field(96, ge=1)
    batch_size: int = Field(16, ge=1)
    max_examples: int | None = Field(None, ge=1, description="cap on eval rows (None: all)")


class RegistryConfig(_Strict):
    tracking_uri: str | None = Field(None, description="default: MLFLOW_TRACKING_URI, else a "
                                                         "sqlite store under the output dir")
    local_dir: str = Field(".hammer/mlflow", description="sqlite store + artifacts when no URI is given")
    experiment: str = "hammer"
    model_name: str = "hammer-fc"
    register_model: bool = Field(True, description="register a model version (else only log the run)")


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

    @field_validator("output_dir")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("output_dir must not be empty")
        return v

    def fingerprint(self) -> str:
        """Stable hash of the whole config (for lineage tags and caching)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]

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
    for src in raw.get("data", {}).get("sources", []) or []:
        if isinstance(src, dict) and isinstance(src.get("path"), str) and not Path(src["path"]).is_absolute():
            src["path"] = str((base / src["path"]).resolve())


def _format_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid config {origin}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see data/configs/demo.yaml for every key)"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


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

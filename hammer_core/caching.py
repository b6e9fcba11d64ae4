"""Content-keyed stage caching: what a stage's output depends on, as one key (no Prefect here).

The Prefect flows (``tasks/``) skip a stage whose key is unchanged since it last ran and whose
folder still holds what that run wrote. A key is the SHA-256 of:

- the stage name and the **code**: a hash of the stage's ``hammer_core`` module and every
  ``hammer_core`` module it imports (found by reading the sources, lazy imports included, with
  the ``__init__`` of every package on the way), plus the versions of the libraries that shape
  the numbers (torch, transformers, peft, ...);
- the **config sections that change the stage's output** (:func:`stage_config`), never run
  ids, timestamps or the output folder;
- the **content hashes of its inputs**: for ingest the source files' SHA-256 (an edited
  corpus is a new key), for later stages the manifests' content hashes of the Parquet
  artifacts they read, or a digest of every file of an upstream folder (the trained adapter).

What each stage depends on:

========  =====================================================================================
ingest    ``data.sources`` + the bytes of every source file (``hf://`` sources: never cached)
prepare   ``prepare`` (but ``workers``) with the effective seed (``prepare.seed``, else ``seed``),
          the tokenizer (``model.tokenizer`` or ``name_or_path``, revision, trust_remote_code,
          and the files of a local tokenizer folder), ``ingest/examples.parquet``
train     ``model`` (a local model folder by file names, sizes and mtimes), ``adapter``,
          ``train`` but :data:`TRAIN_BOOKKEEPING`, ``seed``, ``prepare/train_tokens.parquet``
export    the ``train`` folder (checkpoints excepted)
eval      ``eval``, ``model``, ``seed``, the ``train`` folder, ``prepare/eval.parquet`` and
          ``prepare/eval_tokens.parquet`` (+ the bfcl-eval version when BFCL categories are set)
register  never cached (registration is idempotent on lineage; see hammer_core.registry.registration)
========  =====================================================================================

A stage that ran writes a stamp (:data:`STAMP`) into its folder: the key and the SHA-256 of every
file it left there. A cached result is used only when the stamp holds the same key and every
file still has its recorded hash (:func:`verify_stamp`); otherwise the stage runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from hammer_core.artifacts import atomic_write_json, manifest_path, sha256_file
from hammer_core.config import TINY_MODEL, PipelineConfig
from hammer_core.locking import LOCK_NAME

STAMP = ".hammer-stage.json"
CACHED_STAGES = ("ingest", "prepare", "train", "export", "eval")

#: Train settings that do not change the trained adapter or the files the stage leaves
#: (checkpoints are not part of the output; see :func:`folder_files`).
TRAIN_BOOKKEEPING = frozenset({"resume", "track", "checkpoint_every", "keep_checkpoints", "launcher",
                               "rdzv_endpoint", "hostfile"})

#: Folders and files of a stage folder that are not its output.
_SKIP_DIRS = frozenset({"checkpoints", ".shards"})
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")
_LIBRARIES = ("torch", "transformers", "tokenizers", "peft", "deepspeed", "pyarrow", "polars", "numpy")

PACKAGE_DIR = Path(__file__).resolve().parent


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


#: The module each stage runs (its code is that module and every hammer_core module it imports).
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "ingest": ("data.ingest",), "prepare": ("data.prepare",),
    "train": ("train.trainer", "train.worker", "train.distributed"),
    "export": ("model.export",), "eval": ("evaluation.stage",),
}


def _module_file(name: str) -> Path | None:
    """The source of a hammer_core module, or its compiled extension (``name.*.so``)."""
    base = PACKAGE_DIR.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    compiled = sorted(base.parent.glob(f"{base.name}.*.so")) + sorted(base.parent.glob(f"{base.name}.*.pyd"))
    return compiled[0] if compiled else None


_FROM_IMPORT = re.compile(r"^[ \t]*from[ \t]+(\.+[\w.]*|hammer_core(?:\.\w+)*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]+)",
                          re.M)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n]+)", re.M)


def _names(text: str) -> list[str]:
    text = re.sub(r"#[^\n]*", "", text).strip("()")
    return [part.split(" as ")[0].strip() for part in text.split(",") if part.strip()]


def _imports(path: Path) -> set[str]:
    """The hammer_core modules a source file imports, anywhere in it (lazy imports included).
    A textual scan, not ``ast`` (whose parser is not thread-safe on CPython 3.11 and flows run
    tasks in threads); an import mentioned in a docstring only adds a file to the hash."""
    rel = path.relative_to(PACKAGE_DIR).with_suffix("").parts
    package = ["hammer_core", *(rel[:-1])]  # the package the file is in (an __init__: itself)
    text = path.read_text(encoding="utf-8")
    found: list[str] = []
    for module, names in _FROM_IMPORT.findall(text):
        if module.startswith("."):  # relative: from .x import y / from . import y
            level = len(module) - len(module.lstrip("."))
            rest = module[level:]
            base = ".".join(package[: len(package) - level + 1])
            module = f"{base}.{rest}" if rest else base
        found.append(module)
        found.extend(f"{module}.{n}" for n in _names(names))
    for names in _IMPORT.findall(text):
        found.extend(_names(names))
    return {n.removeprefix("hammer_core.") for n in found if n.startswith("hammer_core.")}


@lru_cache(maxsize=None)
def code_version(stage: str | None = None) -> str:
    """Hash of the code a stage runs (its module and, transitively, every ``hammer_core`` module
    it imports; the whole package for ``None``), plus the versions of the numeric libraries.
    An edit elsewhere in the package leaves the stage's cache valid."""
    if stage is None:
        files = sorted(PACKAGE_DIR.rglob("*.py"))
    else:
        # the stage wrappers (their own code only) and the package's __init__, which every import runs
        seen: set[Path] = {PACKAGE_DIR / "stages.py", PACKAGE_DIR / "__init__.py"}
        todo = list(STAGE_MODULES[stage])
        while todo:
            name = todo.pop()
            parts = name.split(".")
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # its packages' __init__ run too
            f = _module_file(name)
            if f is None or f in seen:
                continue
            seen.add(f)
            if f.suffix == ".py":
                todo.extend(_imports(f))
        files = sorted(seen)
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    for lib in _LIBRARIES:
        try:
            h.update(f"{lib}=={metadata.version(lib)}\0".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{lib}:missing\0".encode())
    return h.hexdigest()[:20]


def folder_files(folder: str | os.PathLike[str]) -> dict[str, str]:
    """``{relative path: sha256}`` of every file a stage left in ``folder`` (checkpoints, temp
    files, the stamp and the folder's lock file excepted)."""
    root = Path(folder)
    out: dict[str, str] = {}
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".tmp"))
        for name in sorted(filenames):
            if name in (STAMP, LOCK_NAME) or name.endswith(".tmp") or name.startswith(".tmp"):
                continue
            path = Path(dirpath) / name
            out[path.relative_to(root).as_posix()] = sha256_file(path)
    return out


def folder_digest(folder: str | os.PathLike[str]) -> str:
    """One hash of every output file of a stage folder (names and contents)."""
    files = folder_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder} holds no stage output; run the earlier stage first")
    return "sha256:" + _sha(files)


def artifact_hash(path: str | os.PathLike[str]) -> str:
    """The content hash recorded in a Parquet artifact's manifest."""
    mpath = manifest_path(path)
    if not mpath.exists():
        raise FileNotFoundError(f"artifact {path} (or its manifest) does not exist; run the earlier stage first")
    return json.loads(mpath.read_text())["content_hash"]


def _local_tree(path: str, *, weights_by_stat: bool) -> dict[str, str] | None:
    """Fingerprint of a local model / tokenizer folder (None for a hub id); weight files are
    identified by size and mtime (hashing gigabytes on every run would cost more than it saves)."""
    root = Path(path)
    if not root.exists():
        return None
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    out: dict[str, str] = {}
    for p in files:
        rel = p.name if root.is_file() else p.relative_to(root).as_posix()
        if p.name.endswith(_WEIGHT_SUFFIXES):
            if weights_by_stat:
                st = p.stat()
                out[rel] = f"size={st.st_size},mtime_ns={st.st_mtime_ns}"
        else:
            out[rel] = sha256_file(p)
    return out


def _tokenizer_identity(cfg: PipelineConfig) -> dict[str, Any]:
    m = cfg.model
    name = m.tokenizer or m.name_or_path
    ident: dict[str, Any] = {"name": name, "revision": m.revision, "trust_remote_code": m.trust_remote_code}
    if name == TINY_MODEL:
        from hammer_core.paths import TINY_TOKENIZER_DIR

        ident["files"] = _local_tree(str(TINY_TOKENIZER_DIR), weights_by_stat=False)
    else:
        ident["files"] = _local_tree(_model_files(name), weights_by_stat=False)
    return ident


def _model_identity(cfg: PipelineConfig) -> dict[str, Any]:
    ident: dict[str, Any] = {"config": cfg.model.model_dump(mode="json"), "tokenizer": _tokenizer_identity(cfg)}
    if cfg.model.name_or_path != TINY_MODEL:
        ident["files"] = _local_tree(_model_files(cfg.model.name_or_path), weights_by_stat=True)
    return ident


def _model_files(name_or_path: str) -> str:
    """Where a model's files are: the GGUF file behind a preset or .gguf path, else the name."""
    from hammer_core.model.presets import gguf_source

    source = gguf_source(name_or_path)
    return str(source) if source is not None else name_or_path


def _source_fingerprints(cfg: PipelineConfig) -> list[Any] | None:
    from hammer_core.data.readers import expand_source_path, is_hf_source

    out: list[Any] = []
    for src in cfg.data.sources:
        if is_hf_source(src.path):
            return None  # a hub dataset can change under the same id: always re-read it
        out.append([src.model_dump(mode="json"),
                    [[os.fspath(f), sha256_file(f)] for f in expand_source_path(src.path)]])
    return out


def stage_config(stage: str, cfg: PipelineConfig) -> dict[str, Any]:
    """The config values that change what ``stage`` writes (see the module doc)."""
    if stage == "ingest":
        return {"sources": [s.model_dump(mode="json") for s in cfg.data.sources]}
    if stage == "prepare":
        return {"prepare": cfg.prepare.model_dump(mode="json", exclude={"workers", "seed"}),
                "seed": cfg.prepare_seed(), "tokenizer": _tokenizer_identity(cfg)}
    if stage == "train":
        return {"model": _model_identity(cfg), "adapter": cfg.adapter.model_dump(mode="json"),
                "train": cfg.train.model_dump(mode="json", exclude=set(TRAIN_BOOKKEEPING)), "seed": cfg.seed}
    if stage == "export":
        return {}
    if stage == "eval":
        out: dict[str, Any] = {"eval": cfg.eval.model_dump(mode="json"), "model": _model_identity(cfg),
                               "seed": cfg.seed}
        if cfg.eval.bfcl_categories:
            try:
                out["bfcl_eval"] = metadata.version("bfcl-eval")
            except metadata.PackageNotFoundError:
                out["bfcl_eval"] = None
        return out
    raise ValueError(f"stage {stage!r} is not cached (cached: {', '.join(CACHED_STAGES)})")


def stage_inputs(stage: str, cfg: PipelineConfig, dirs: dict[str, str | os.PathLike[str]]) -> dict[str, Any] | None:
    """Content hashes of the inputs of ``stage``, read from the upstream folders in ``dirs``
    (stage name -> folder); None when an input cannot be identified by content."""
    if stage == "ingest":
        sources = _source_fingerprints(cfg)
        return None if sources is None else {"sources": sources}
    if stage == "prepare":
        return {"examples": artifact_hash(Path(dirs["ingest"]) / "examples.parquet")}
    if stage == "train":
        return {"train_tokens": artifact_hash(Path(dirs["prepare"]) / "train_tokens.parquet")}
    if stage == "export":
        return {"train": folder_digest(dirs["train"])}
    if stage == "eval":
        prep = Path(dirs["prepare"])
        return {"train": folder_digest(dirs["train"]), "eval": artifact_hash(prep / "eval.parquet"),
                "eval_tokens": artifact_hash(prep / "eval_tokens.parquet")}
    raise ValueError(f"stage {stage!r} is not cached (cached: {', '.join(CACHED_STAGES)})")


def stage_key(stage: str, cfg: PipelineConfig, dirs: dict[str, str | os.PathLike[str]] | None = None) -> str | None:
    """The cache key of ``stage`` (``hammer-<stage>-<sha256>``), or None when the stage must
    always run (register; ingest of a hub dataset)."""
    if stage not in CACHED_STAGES:
        return None
    inputs = stage_inputs(stage, cfg, dirs or {})
    if inputs is None:
        return None
    digest = _sha({"stage": stage, "code": code_version(stage), "config": stage_config(stage, cfg), "inputs": inputs})
    return f"hammer-{stage}-{digest}"


def write_stamp(folder: str | os.PathLike[str], stage: str, key: str) -> dict[str, Any]:
    """Record that ``folder`` holds the output of ``stage`` for ``key`` (and every file's hash)."""
    stamp = {"stage": stage, "key": key, "files": folder_files(folder)}
    atomic_write_json(Path(folder) / STAMP, stamp)
    return stamp


def verify_stamp(folder: str | os.PathLike[str], key: str) -> bool:
    """True when ``folder`` holds the output written for ``key``: the stamp names the key and
    every recorded file is there with its recorded hash (extra files are allowed)."""
    path = Path(folder) / STAMP
    try:
        stamp = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if stamp.get("key") != key or not stamp.get("files"):
        return False
    root = Path(folder)
    for rel, digest in stamp["files"].items():
        p = root / rel
        if not p.is_file() or sha256_file(p) != digest:
            return False
    return True

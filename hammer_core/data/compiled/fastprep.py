"""The prepare stage's per-row hot path, compiled (``hammer_core.data.compiled._fastprep``), and its Python glue.

:mod:`hammer_core.data.prepare` runs masking and rendering through :class:`FastKernel` when the
extension is importable, and through its pure-Python implementation otherwise (one warning).
The Python implementation is the oracle: the kernel reproduces its output byte for byte (the
tests compare whole artifacts, both ways), and hands back to it every row it does not handle.

What the kernel does, per block of rows read straight from the Arrow buffers: cut each row's
``tools`` at ``},{"name":`` and look the pieces up among registered tools (a tool is
registered once: literal pieces and name slots of its canonical JSON and of its prompt forms,
cut from its text in C; its :class:`~hammer_core.data.masking.CompiledTool` is made only when the
Python path needs it); read the ``calls`` JSON (only in the
canonical form ingestion writes -- anything else goes to Python); decide irrelevance
eligibility; then, per copy, draw the mask coin, the shuffle and the names from the same
counter-based generator (``mix64``, bit-exact) and write the output row (id, lineage, masked
tools and calls) into Arrow buffers, and the prompt and answer (as text, or as token ids
assembled from its fragment cache). With the compiled BPE (:mod:`hammer_core.data.compiled.fastbpe`, set by
``Kernel.set_bpe``), the fragments it misses are tokenized in place, as
:class:`~hammer_core.data.tokenization.FragmentTokenizer` would (cut at the safe cuts, each chunk's
ids exactly the HF tokenizer's): masked names straight into the row (random: never cached),
queries and other new text into the cache. Only fragments the BPE refuses (non-ASCII or
special-token text) go back to Python, which tokenizes them with the HF tokenizer.

Rows that go to Python: conversations other than one user turn (optionally after one system
turn); rows whose tools or calls are not in canonical form or exceed the kernel's limits (60
tools, 512 names, 64 calls, 128 arguments a call); masked rows where a gold argument equals a
parameter's default (masking perturbs it: ~1 % of masked rows) or whose calls name an unknown
function or argument.

Disable with ``HAMMER_FASTPREP=0`` (the output is the same).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from json.encoder import encode_basestring
from typing import Any

import numpy as np
import pyarrow as pa

from hammer_core.data.compiled.switch import compiled_switched_off
from hammer_core.data.masking import (FN_LENGTHS, PARAM_LENGTHS, CompiledTool, Masker, ToolCache, _compiled_forms,
                                       _params, _perturbable, key_prefix, norm_name)
from hammer_core.data.prompts import _LEADS, _TRAILS, HEAD, MID, NO_CALL_TARGET, TAIL, _shown, cut_ends, dressed
from hammer_core.schema import parse_json

try:
    from hammer_core.data.compiled import _fastprep
    _IMPORT_ERROR: Exception | None = None
except ImportError as err:  # not built (no compiler at install time): the Python path runs
    _fastprep = None
    _IMPORT_ERROR = err

_WARNED = False


def enabled() -> bool:
    """Use the kernel? (importable, and not switched off with ``HAMMER_FASTPREP=0``); warns once
    when it should be used but cannot be imported."""
    global _WARNED
    if compiled_switched_off():
        return False
    if _fastprep is None:
        if not _WARNED:
            _WARNED = True
            warnings.warn(f"hammer_core.data.compiled._fastprep is not available ({_IMPORT_ERROR}); the prepare stage "
                          "runs its pure-Python path (same output, slower). Rebuild with "
                          "`pip install --no-deps -e .`", RuntimeWarning, stacklevel=2)
        return False
    return True


def _strcol(arr: pa.Array) -> tuple | None:
    """An Arrow string array as the kernel reads it: (validity, offsets, data, offset, length)."""
    if arr.type != pa.string():
        return None
    validity, offsets, data = arr.buffers()
    return (validity, offsets, data if data is not None else b"", arr.offset, len(arr))


class FastKernel:
    """The compiled kernel with its registered tools (one per :class:`hammer_core.data.prepare.Engine`)."""

    MAX_TOOLS = 200_000  # registered tools a kernel can hold; beyond this, a block's new rows go to Python
    KEEP_TOOLS = 16_384  # the stage starts a fresh kernel before a block once one holds this many

    def __init__(self, masker: Masker, wrap: tuple[str, str, str] | None = None,
                 cache: ToolCache | None = None) -> None:
        if _fastprep is None:
            raise RuntimeError(f"hammer_core.data.compiled._fastprep is not available: {_IMPORT_ERROR}")
        fn, pn = masker.fn_names, masker.param_names
        if (fn.lo, fn.hi) != FN_LENGTHS or (pn.lo, pn.hi) != PARAM_LENGTHS or FN_LENGTHS != (5, 15) \
                or PARAM_LENGTHS != (4, 10) or fn.pool_size != pn.pool_size:
            raise ValueError("the kernel's name lengths differ from masking's")
        self.kernel = _fastprep.Kernel(int(fn.key), int(pn.key), int(fn.pool_size), float(masker.p),
                                       HEAD, MID, TAIL, NO_CALL_TARGET, "[]\n")
        if wrap is not None:
            self.kernel.set_wrap(*wrap)
        # the registered tools: a CompiledTool, or the tool's text until Python needs it (tool())
        self.tools: list[CompiledTool | str] = []
        self.cache = cache if cache is not None else ToolCache()  # shared with the Python path
        self._ids: dict[Any, int] = {}

    def tool(self, tool_id: int) -> CompiledTool:
        """The compiled tool of a registered id (made on first use for one registered from text)."""
        t = self.tools[tool_id]
        if isinstance(t, str):
            t = self.tools[tool_id] = self.cache.get(t)  # type: ignore[assignment]
        return t  # type: ignore[return-value]

    def _intern(self, kind: str, value: Any) -> int:
        return self._ids.setdefault((kind, value), len(self._ids))

    def register(self, ct: CompiledTool) -> None:
        """Register a compiled tool (one :meth:`register_text` leaves to Python)."""
        shown = _shown(ct)
        self._add(ct, ct.text, ct.name, ct.params, ct.norm_name, ct.signature,
                  (ct.canon_inline.lits, ct.canon_inline.slots), shown.template.lits, shown.template.slots,
                  shown.text, [(pi, old) for pi, _default, old in ct.defaults])

    def register_text(self, text: str) -> bool:
        """Register a tool straight from its canonical text, with ``compile_tool``'s cut of it
        and no Python :class:`CompiledTool` (most tools of corpora like Glaive or ToolACE are
        seen in one row: building one would be paid for nothing; :meth:`tool` makes it if the
        Python path needs it). False: a text ``compile_tool`` leaves to Python (then
        :meth:`register`)."""
        forms = _compiled_forms(text)
        spec = parse_json(text) if forms is not None else None
        if not isinstance(spec, dict):
            return False
        (_full_lits, _full_slots, lits, slots, _specs), (_pf, _pfs, shown_lits, shown_slots, _ps, shown_text) = forms
        names, props = _params(spec)
        name = str(spec.get("name", ""))
        desc = spec.get("description", "")
        signature = ((desc if isinstance(desc, str) else "").strip().lower(), tuple(sorted(names)))
        defaults = [(i, str(p["default"])) for i, p in enumerate(props)
                    if isinstance(p, dict) and _perturbable(p.get("default"))]
        self._add(text, text, name, names, norm_name(name), signature, (tuple(lits), tuple(slots)), shown_lits,
                  tuple(shown_slots), shown_text, defaults)
        return True

    def _add(self, entry: CompiledTool | str, text: str, name: str, params: Sequence[str], norm: str, signature: Any,
             canon_inline: tuple, shown_lits: Sequence[str], shown_slots: tuple, shown_text: str,
             defaults: list[tuple[int, str]]) -> None:
        """The kernel's registration of one tool: its name, parameters and perturbable defaults,
        the templates of its compact JSON and of its prompt form -- masked: the prompt's own
        name-slot template at each list position (what ``_tool_fragments`` fills with a row's
        names); unmasked: the shown text as (lead + head, middle, tail + trail), its middle the
        same at every position."""
        head, middle, tail = cut_ends(shown_text)
        plain = [tuple(f for f in (_LEADS[pos >> 1] + head, middle, tail + _TRAILS[pos & 1]) if f) for pos in range(4)]
        shown = [(dressed(shown_lits, pos), shown_slots) for pos in range(4)]
        tool_id = self.kernel.add_tool(
            text, encode_basestring(name)[1:-1], self._intern("name", name), self._intern("norm", norm),
            self._intern("sig", signature), [encode_basestring(p)[1:-1] for p in params], canon_inline,
            shown, plain, defaults)
        assert tool_id == len(self.tools)
        self.tools.append(entry)

    def parse(self, columns: Any) -> Any | None:
        """The kernel's parse of a block (``prepare._Columns``), new tools registered on the way;
        None when the block's columns are not in the expected layout (the block goes to Python)."""
        tools_a, calls_a, msgs = (columns.column(c) for c in ("tools", "calls", "messages"))
        struct = msgs.values
        role_a, content_a = struct.field("role"), struct.field("content")
        if any(a.null_count for a in (tools_a, calls_a, msgs, struct, role_a, content_a)):
            return None
        tools, calls, roles, contents = (_strcol(a) for a in (tools_a, calls_a, role_a, content_a))
        if tools is None or calls is None or roles is None or contents is None:
            return None
        offsets = msgs.offsets
        args = (tools, calls, offsets.buffers()[1], offsets.offset, roles, contents, columns.n)
        for _ in range(3):
            parsed, unknown = self.kernel.parse(*args)
            if not unknown:
                return parsed
            for text in unknown:
                if len(self.tools) < self.MAX_TOOLS and self.register_text(text):
                    continue
                ct = self.cache.get(text) if len(self.tools) < self.MAX_TOOLS else None
                if ct is None:
                    self.kernel.add_bad(text)  # rows with it go to Python
                else:
                    self.register(ct)
        return parsed

    @staticmethod
    def hash_ids(ids: pa.Array, seed: int, eval_fraction: float, rank_purposes: Sequence[tuple[str, str]] = ()
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(:func:`hammer_core.data.masking.row_keys` of the ids, :func:`hammer_core.data.prepare.is_eval` of
        each, and for each (train purpose, eval purpose) of ``rank_purposes`` the row's
        ``row_keys(seed, [id], purpose)`` under the purpose of its split: shape (rows, purposes))
        computed in C (the same BLAKE2b / SHA-256), without holding the GIL; None when the ids
        cannot be read."""
        spec = _strcol(ids)
        if spec is None or ids.null_count:
            return None
        prefixes = [(key_prefix(seed, t), key_prefix(seed, e)) for t, e in rank_purposes]
        keys, evals, ranks = _fastprep.hash_ids(spec, key_prefix(seed, "mask"), f"{seed}:split:".encode(),
                                                float(eval_fraction), prefixes)
        return (np.frombuffer(keys, dtype=np.uint64), np.frombuffer(evals, dtype=np.uint8).astype(bool),
                np.frombuffer(ranks, dtype=np.uint64).reshape(len(ids), len(prefixes)))

    @staticmethod
    def id_columns(columns: Any) -> tuple | None:
        arrays = [columns.column(c) for c in ("id", "variant", "parent_id")]
        if arrays[0].null_count or arrays[1].null_count:
            return None
        ids, variants, parents = (_strcol(a) for a in arrays)
        if ids is None or variants is None or parents is None:
            return None
        return ids, variants, parents


def string_array(n: int, offsets: Any, data: Any, valid: bytes | None = None) -> pa.Array:
    """An Arrow string array from the kernel's buffers (bytes-like: ``bytes`` or the kernel's
    ``Blob``, used without a copy; ``valid``: one byte a row)."""
    bitmap, nulls = None, 0
    if valid is not None:
        v = np.frombuffer(valid, dtype=np.uint8)
        nulls = int(n - np.count_nonzero(v))
        if nulls:
            bitmap = pa.py_buffer(np.packbits(v, bitorder="little").tobytes())
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data), bitmap, nulls)


def mix64(key: int, counter: int) -> int:
    """The kernel's mix64 (tests compare it with :func:`hammer_core.data.masking.mix64_scalar`)."""
    return _fastprep.mix64(key, counter)


def gen_name(key: int, lengths: tuple[int, int], index: int) -> str:
    """The kernel's name of generator ``key`` for draw index ``index`` (tests)."""
    return _fastprep.gen_name(key, lengths[0], lengths[1], index)


__all__ = ["FastKernel", "enabled", "gen_name", "mix64", "string_array"]

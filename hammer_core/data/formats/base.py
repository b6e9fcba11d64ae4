"""What every corpus format module shares: a target (:class:`Candidate`), a normalizer, a format."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hammer_core.data.row_errors import RowError

@dataclass(frozen=True)
class Candidate:
    """One target of a record: the canonical ``row``, or the ``error`` that rejects it.

    ``suffix`` tells the targets of one record apart: ``""`` for a single-target record,
    ``"#t<k>"`` (1-based) for the k-th target of a conversation. It is appended to the
    record's location in the rejects, and is already part of the row's ``id``.
    """

    suffix: str
    row: dict[str, Any] | None = None
    error: RowError | None = None
    #: digest of the row's tools as a *set* (see :func:`~hammer_core.data.formats.common.dump_tools`)
    #: when the normalizer computed it; ingestion computes it otherwise
    tools_digest: bytes | None = None


class Normalizer(Protocol):
    """``normalize(raw, *, source, task, index) -> [Candidate, ...]``; raises RowError when the
    whole record is unusable. ``index`` is the record's 0-based position in its source."""

    def __call__(self, raw: Mapping[str, Any], *, source: str, task: str,
                 index: int) -> list[Candidate]: ...


#: ``(location, record)`` pairs as the readers yield them; a record is a dict or a RowError.
Records = Iterator[tuple[str, "dict[str, Any] | RowError"]]


@dataclass(frozen=True)
class Format:
    """A corpus format: the keys (and optional shape test) that identify its records, its
    normalizer, and an optional per-file binding (``bind_file(path, records) -> records``)."""

    name: str
    keys: frozenset[str]
    normalize: Normalizer
    description: str = ""
    shape: Callable[[Mapping[str, Any]], bool] | None = None
    bind_file: Callable[[Path, Records], Records] | None = None

    def matches(self, record: Mapping[str, Any]) -> bool:
        return self.keys <= record.keys() and (self.shape is None or self.shape(record))


__all__ = ["Candidate", "Format", "Normalizer", "Records"]

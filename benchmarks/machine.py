"""The machine a benchmark ran on, recorded next to its figures (one helper for every script)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(*packages: str, **extra: Any) -> dict[str, Any]:
    """Architecture, cores, CPU model, Python, the date (UTC), the load average at start and the
    versions of torch and ``packages``; ``extra`` adds script-specific entries."""
    info: dict[str, Any] = {
        "arch": platform.machine(), "nproc": os.cpu_count(), "cpu": cpu_model(),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    for name in ("torch", *packages):
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = "not installed"
    info.update(extra)
    return info


def write_section(path: Path, tag: str, body: str) -> None:
    """Replace the part of the markdown file ``path`` between ``<!-- tag:begin -->`` and
    ``<!-- tag:end -->`` with ``body`` (appended at the end when the markers are absent), leaving
    the rest of the file -- hand-written prose, other scripts' sections -- as it was; atomic."""
    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    section = f"{begin}\n{body.strip()}\n{end}"
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + section + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)

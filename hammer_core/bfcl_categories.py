"""The BFCL single-turn test categories, their aliases and groups (what ``eval.bfcl_categories`` accepts).

A module of its own, importing nothing, so that the config can validate category names without
importing the BFCL checker (:mod:`hammer_core.evaluation.bfcl`), and editing the checker leaves
the other stages' cache keys alone.
"""

from __future__ import annotations

from dataclasses import dataclass

PYTHON, JAVA, JAVASCRIPT = "python", "java", "javascript"


@dataclass(frozen=True)
class Category:
    """A BFCL single-turn test category."""

    name: str
    language: str  # python | java | javascript
    kind: str  # "ast" | "irrelevance" | "relevance"
    live: bool

    @property
    def has_answers(self) -> bool:
        return self.kind == "ast"


CATEGORIES: dict[str, Category] = {c.name: c for c in (
    Category("simple_python", PYTHON, "ast", False),
    Category("simple_java", JAVA, "ast", False),
    Category("simple_javascript", JAVASCRIPT, "ast", False),
    Category("multiple", PYTHON, "ast", False),
    Category("parallel", PYTHON, "ast", False),
    Category("parallel_multiple", PYTHON, "ast", False),
    Category("irrelevance", PYTHON, "irrelevance", False),
    Category("live_simple", PYTHON, "ast", True),
    Category("live_multiple", PYTHON, "ast", True),
    Category("live_parallel", PYTHON, "ast", True),
    Category("live_parallel_multiple", PYTHON, "ast", True),
    Category("live_irrelevance", PYTHON, "irrelevance", True),
    Category("live_relevance", PYTHON, "relevance", True),
)}

ALIASES = {"simple": "simple_python", "java": "simple_java", "javascript": "simple_javascript"}
GROUPS = {
    "all": list(CATEGORIES),
    "non_live": [c for c, v in CATEGORIES.items() if not v.live],
    "live": [c for c, v in CATEGORIES.items() if v.live],
    "ast": [c for c, v in CATEGORIES.items() if v.kind == "ast"],
}


def resolve_categories(spec: str | list[str]) -> list[str]:
    """``"simple_python,multiple"``, ``"live"`` or ``["all"]`` -> category names, in BFCL order."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen: set[str] = set()
    for raw in names:
        name = ALIASES.get(raw.strip(), raw.strip())
        if name in GROUPS:
            chosen.update(GROUPS[name])
        elif name in CATEGORIES:
            chosen.add(name)
        elif name:
            raise ValueError(f"unknown BFCL category {raw.strip()!r}; choose from "
                             f"{sorted(CATEGORIES)}, the aliases {sorted(ALIASES)} or the groups "
                             f"{sorted(GROUPS)}")
    if not chosen:
        raise ValueError("no BFCL category given")
    return [c for c in CATEGORIES if c in chosen]


__all__ = ["ALIASES", "CATEGORIES", "GROUPS", "JAVA", "JAVASCRIPT", "PYTHON", "Category", "resolve_categories"]

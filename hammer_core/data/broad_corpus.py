"""Deterministic generator of a *broad* xLAM-format corpus: many domains, hundreds of tools.

The bundled sample (:mod:`hammer_core.data.sample_data`) has two domains and 26 tools: too narrow
for a model to learn what Hammer teaches (read a tool's *description*, not its name) and too
narrow to say anything about tools never seen in training. This module writes a corpus for the
quality benchmark in the same xLAM-function-calling-60k layout and conventions as the sample:
one JSON line per row, ``{"id", "query", "tools", "answers"}``, ``tools`` and ``answers`` as
JSON *strings*, flat parameter dicts with Python-ish types (``"str"``, ``"int, optional"``,
``"List[str]"``...) and ``default`` on optional parameters that have one.

**Tools** are built compositionally: a :class:`Family` is a name template, a description
template, typed parameters (:class:`Slot`: a :class:`~hammer_core.data.sample_data.Param` plus where
its values come from) and at least three query templates (questions, imperatives, casual
requests), applied to a list of *subjects* (e.g. ``get_current_{key}`` over temperature,
humidity, UV index...), so one family gives several tools with similar names and different
purposes. The families, their value pools and the clusters are data, in
``broad_corpus_tools.json`` beside this module (value samplers are named there, defined here).
The tool set does not depend on the seed: :data:`DOMAINS` maps 18 domains to
their tools (well over 300 in all), :data:`CLUSTERS` groups the domains into four task clusters
(one output file each, because the CGC-LoRA task label is per file). A tool's stable id is
``"<domain>/<name>"`` (:func:`tool_ids`); no tool name is a BFCL function name.

**Rows** (:func:`generate_cluster`): each row offers 2-6 candidate tools (the right one(s) plus
distractors, mostly from the same domain, shuffled). Exact shares per file:
:data:`PARALLEL_SHARE` rows call one function twice with different arguments,
:data:`MULTIPLE_SHARE` call two different functions of one domain, :data:`NO_CALL_SHARE` ask
something none of the listed tools can answer (``answers`` is ``"[]"``: the tools that could
answer it, those on the same subject and the ones declared as overlapping, are left out), the
rest are single calls. Argument values come from the query text (string values appear in it
verbatim); optional arguments are sometimes given, sometimes with their default value said
explicitly. Gold tools are drawn uniformly over the cluster's tools, so every tool gets rows.

**Unseen tools** (:func:`unseen_tools`): a seeded choice of ``unseen_share`` of the tools of
every domain. Rows whose gold tools are unseen go to ``<cluster>.unseen.jsonl``; the seen file
``<cluster>.jsonl`` never mentions an unseen tool, neither as gold nor as distractor (the unseen
files may offer seen tools as distractors). Train on the seen files, test on the unseen ones.
With ``unseen_share=0`` no unseen file is written. ``tools.json`` lists every tool's id, name,
domain, cluster and whether it is held out. Ingest a held-out file under its cluster's task
(``SourceSpec("everyday.unseen.jsonl", task="everyday")``, or ``task:`` in the config); by
default its task would be the file name, ``everyday.unseen``.

Usage::

    python -m hammer_core.data.broad_corpus OUT_DIR [--rows-per-cluster N] [--seed S] [--unseen-share 0.15]

prints a one-line JSON summary. Same seed, same bytes; ids are unique across all files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hammer_core.artifacts import atomic_write_text
from hammer_core.data.sample_data import (
    _JOINERS,
    _NO_DEFAULT,
    CITIES,
    COMPANIES,
    COUNTRIES,
    CURRENCIES,
    NATIONALITIES,
    Args,
    Function,
    Param,
    _date,
    _lower_first,
    _row_line,
)

PARALLEL_SHARE = 0.10  # one function called twice with different arguments
MULTIPLE_SHARE = 0.10  # two different functions
NO_CALL_SHARE = 0.08  # no listed tool fits: answers "[]"
OTHER_DOMAIN_SHARE = 0.15  # rows that also offer one distractor from another domain of the cluster
MAX_TOOLS = 6
DEFAULT_ROWS_PER_CLUSTER = 1_000
DEFAULT_UNSEEN_SHARE = 0.15
UNSEEN_ID_OFFSET = 500_000  # ids: cluster number * 1,000,000 + line (+ this in unseen files)

# --------------------------------------------------------------------------- building blocks

Sampler = Callable[[random.Random, dict[str, Any]], Any]


@dataclass(frozen=True)
class Slot:
    """One parameter of a family: its spec and where its values come from.

    ``type`` is the base xLAM type (``"str"``, ``"int"``, ``"List[str]"``...); ``optional``
    adds ``", optional"``. ``values`` is a list to choose from or ``f(rng, ctx)`` where ``ctx``
    holds the subject's fields and the values drawn so far for this call (so a destination can
    differ from its origin). ``description`` may use the subject's fields (``{label}``...)."""

    name: str
    type: str
    description: str
    values: Sequence[Any] | Sampler
    default: Any = _NO_DEFAULT
    optional: bool = False

    def draw(self, rng: random.Random, ctx: dict[str, Any]) -> Any:
        if callable(self.values):
            return self.values(rng, ctx)
        return rng.choice(self.values)

    def param(self, subject: dict[str, Any]) -> Param:
        description = self.description.format(**subject)
        if self.default is not _NO_DEFAULT and "Default" not in description:
            description += f" Default is {_default_text(self.default)}."
        type_text = f"{self.type}, optional" if self.optional or self.default is not _NO_DEFAULT \
            else self.type
        return Param(self.name, type_text, description, self.default)


#: A query template: text with ``{slot}`` and ``{subject field}`` placeholders, or
#: ``(text, fixed arguments)`` where the wording implies the arguments (``"hour by hour"``).
Template = str | tuple[str, Args]


@dataclass(frozen=True)
class Family:
    """Tools made from one pattern, one per subject (or a single tool when ``subjects`` is
    empty). ``name``/``description`` are templates over the subject's fields (``{key}``,
    ``{label}``...). ``topic`` names what a tool is about: a no-call row leaves out every tool
    sharing a topic with the question's tool; ``conflicts`` names tools that could answer the
    same questions (never offered as distractors, never offered in that tool's no-call rows)."""

    name: str
    description: str
    slots: tuple[Slot, ...]
    queries: tuple[Template, ...]
    subjects: tuple[dict[str, Any], ...] = ()
    topic: str = "{key}"
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tool:
    """A generated tool: the sample's :class:`Function` plus its domain, topics and conflicts."""

    function: Function
    domain: str
    topics: frozenset[str]
    conflicts: frozenset[str]

    @property
    def name(self) -> str:
        return self.function.name

    @property
    def id(self) -> str:
        return f"{self.domain}/{self.function.name}"


def _default_text(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)


def _render(value: Any) -> str:
    """How a value reads in a query: lists as "a, b and c", the rest as str()."""
    if isinstance(value, list):
        items = [str(v) for v in value]
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return str(value)


def _fields(text: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(text) if f]


def _maker(family: Family, subject: dict[str, Any]) -> Callable[[random.Random], tuple[str, Args]]:
    slots = {s.name: s for s in family.slots}

    def make(rng: random.Random) -> tuple[str, Args]:
        template = rng.choice(family.queries)
        text, fixed = (template, {}) if isinstance(template, str) else template
        wanted = set(_fields(text)) & set(slots)
        ctx: dict[str, Any] = dict(subject)
        values: Args = {}
        for slot in family.slots:  # in declaration order, so samplers can see earlier values
            if slot.name in fixed:
                values[slot.name] = ctx[slot.name] = fixed[slot.name]
            elif slot.name in wanted:
                values[slot.name] = ctx[slot.name] = slot.draw(rng, ctx)
        return text.format(**{**subject, **{k: _render(v) for k, v in values.items()}}), values

    return make


def build_tools(domain: str, families: Iterable[Family]) -> tuple[Tool, ...]:
    """The tools of one domain, in family then subject order."""
    tools = []
    for family in families:
        for subject in family.subjects or ({"key": ""},):
            name = family.name.format(**subject)
            function = Function(name, family.description.format(**subject),
                                tuple(s.param(subject) for s in family.slots),
                                _maker(family, subject))
            topic = family.topic.format(**subject) or name
            tools.append(Tool(function, domain, frozenset({topic}),
                              frozenset(c.format(**subject) for c in family.conflicts)))
    return tuple(tools)


# --------------------------------------------------------------------------- value helpers


def _iso(rng: random.Random, _ctx: dict[str, Any] | None = None) -> str:
    return _date(rng).isoformat()


def _after(field_name: str, lo: int = 1, hi: int = 14) -> Sampler:
    def draw(rng: random.Random, ctx: dict[str, Any]) -> str:
        start = dt.date.fromisoformat(ctx[field_name])
        return (start + dt.timedelta(days=rng.randint(lo, hi))).isoformat()
    return draw


def _other(field_name: str, pool: Sequence[Any]) -> Sampler:
    def draw(rng: random.Random, ctx: dict[str, Any]) -> Any:
        return rng.choice([v for v in pool if v != ctx[field_name]])
    return draw


def _from_subject(field_name: str) -> Sampler:
    return lambda rng, ctx: rng.choice(ctx[field_name])


def _ints(lo: int, hi: int, step: int = 1) -> Sampler:
    return lambda rng, ctx: rng.randrange(lo, hi + 1, step)


def _floats(lo: float, hi: float, digits: int = 1) -> Sampler:
    return lambda rng, ctx: round(rng.uniform(lo, hi), digits)


def _sample(pool: Sequence[Any], lo: int = 2, hi: int = 3) -> Sampler:
    return lambda rng, ctx: rng.sample(list(pool), rng.randint(lo, hi))


def _clock(rng: random.Random, _ctx: dict[str, Any] | None = None) -> str:
    return f"{rng.randint(6, 22):02d}:{rng.choice([0, 15, 30, 45]):02d}"

def _numbers(rng: random.Random, _ctx: dict[str, Any]) -> list[float]:
    n = rng.randint(4, 7)
    if rng.random() < 0.5:
        return [rng.randint(1, 99) for _ in range(n)]
    return [round(rng.uniform(1, 100), 1) for _ in range(n)]


def _named_samplers(pools: dict[str, Any]) -> dict[str, Sampler]:
    """The samplers the tables name without arguments (``{"sampler": name}``)."""
    people, songs = pools["PEOPLE"], pools["SONGS"]
    return {
        "iso": _iso, "clock": _clock, "numbers": _numbers,
        "email_address": lambda rng, ctx: f"{rng.choice(people).lower()}@example.com",
        "email_addresses": lambda rng, ctx: [f"{p.lower()}@example.com" for p in rng.sample(people, 2)],
        "phone_number": lambda rng, ctx: f"+1-555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
        "artist_of_song": lambda rng, ctx: songs[ctx["title"]],
        "fraction_of_unit_price": lambda rng, ctx: round(ctx["unit_price"] * rng.uniform(0.2, 0.8), 2),
        "month_2025": lambda rng, ctx: f"2025-{rng.randint(1, 12):02d}",
        "four_digits": lambda rng, ctx: f"{rng.randint(0, 9999):04d}",
        "order_number": lambda rng, ctx: f"ORD-{rng.randint(100000, 999999)}",
        "other_unit": lambda rng, ctx: rng.choice([u for u in ctx["units"] if u != ctx["from_unit"]]),
        "grades": lambda rng, ctx: [rng.randint(55, 100) for _ in range(rng.randint(3, 6))],
        "grade_weights": lambda rng, ctx: [rng.choice([1.0, 2.0, 0.5]) for _ in ctx["grades"]],
    }


#: The samplers the tables name with arguments (``{"sampler": name, "args": [...]}``).
_SAMPLER_FACTORIES: dict[str, Callable[..., Sampler]] = {
    "after": _after, "other": _other, "from_subject": _from_subject, "ints": _ints, "floats": _floats,
    "sample": _sample,
}

# --------------------------------------------------------------------------- the tool set

#: The tool tables: value pools, shared slots and subjects, each domain's families, the clusters.
TABLES_PATH = Path(__file__).with_name("broad_corpus_tools.json")
#: Pools the tables may name that live in the bundled sample's generator.
_SAMPLE_POOLS = {"CITIES": CITIES, "COMPANIES": COMPANIES, "COUNTRIES": COUNTRIES, "CURRENCIES": CURRENCIES,
                 "NATIONALITIES": NATIONALITIES}


def _load_tables(path: Path = TABLES_PATH) -> tuple[dict[str, tuple[Family, ...]], dict[str, tuple[str, ...]],
                                                   tuple[tuple[str, str], ...]]:
    """(domain -> families, cluster -> domains, extra conflicts) from the JSON tables."""
    tables = json.loads(path.read_text(encoding="utf-8"))
    pools = {**_SAMPLE_POOLS, **tables["pools"]}
    named = _named_samplers(pools)

    def value(v: Any) -> Any:
        if isinstance(v, dict) and "pool" in v:
            return pools[v["pool"]]
        if isinstance(v, dict) and "sampler" in v:
            if "args" in v:
                return _SAMPLER_FACTORIES[v["sampler"]](*map(value, v["args"]))
            return named[v["sampler"]]
        return v

    def slot(s: Any) -> Slot:
        if isinstance(s, str):  # "@name": a shared slot
            s = tables["slots"][s.removeprefix("@")]
        return Slot(s["name"], s["type"], s["description"], value(s["values"]), s.get("default", _NO_DEFAULT),
                    s.get("optional", False))

    def family(f: dict[str, Any]) -> Family:
        subjects = f.get("subjects", ())
        if isinstance(subjects, str):  # "@name": shared subjects
            subjects = tables["subjects"][subjects.removeprefix("@")]
        queries = tuple(q if isinstance(q, str) else (q[0], q[1]) for q in f["queries"])
        return Family(f["name"], f["description"], tuple(slot(s) for s in f["slots"]), queries, tuple(subjects),
                      f.get("topic", "{key}"), tuple(f.get("conflicts", ())))

    families = {domain: tuple(family(f) for f in fams) for domain, fams in tables["domains"].items()}
    clusters = {c: tuple(ds) for c, ds in tables["clusters"].items()}
    return families, clusters, tuple((a, b) for a, b in tables["extra_conflicts"])


_FAMILIES, CLUSTERS, EXTRA_CONFLICTS = _load_tables()
"""_FAMILIES: domain -> its tool families. CLUSTERS: task clusters, one output file each (the
CGC-LoRA task label is per file). EXTRA_CONFLICTS: pairs of tools (beyond a family's own
``conflicts``) that can answer each other's questions."""


def _build() -> dict[str, tuple[Tool, ...]]:
    domains = {d: build_tools(d, fams) for d, fams in _FAMILIES.items()}
    by_name: dict[str, Tool] = {}
    for tools in domains.values():
        for t in tools:
            if t.name in by_name:
                raise ValueError(f"tool name {t.name!r} is defined twice")
            by_name[t.name] = t
    pairs = {(a, b) for t in by_name.values() for a, b in [(t.name, c) for c in t.conflicts]}
    pairs |= set(EXTRA_CONFLICTS)
    links: dict[str, set[str]] = {}
    for a, b in pairs:
        if a not in by_name or b not in by_name:
            raise ValueError(f"conflict ({a!r}, {b!r}) names an unknown tool")
        links.setdefault(a, set()).add(b)
        links.setdefault(b, set()).add(a)
    return {d: tuple(Tool(t.function, t.domain, t.topics, frozenset(links.get(t.name, ())))
                     for t in tools) for d, tools in domains.items()}


#: domain -> its tools (the same for every seed).
DOMAINS: dict[str, tuple[Tool, ...]] = _build()
CLUSTER_OF: dict[str, str] = {d: c for c, ds in CLUSTERS.items() for d in ds}
assert sorted(CLUSTER_OF) == sorted(DOMAINS), "every domain belongs to exactly one cluster"


def all_tools() -> list[Tool]:
    return [t for tools in DOMAINS.values() for t in tools]


def tool_ids() -> dict[str, Tool]:
    """Stable id (``"<domain>/<name>"``) -> tool, for every tool of the corpus."""
    return {t.id: t for t in all_tools()}


def unseen_tools(seed: int = 0, share: float = DEFAULT_UNSEEN_SHARE) -> frozenset[str]:
    """Ids of the held-out tools: ``round(share * n)`` tools of each domain of ``n`` tools (at
    least one when ``share > 0``), a seeded choice among the domain's tools sorted by id."""
    if not 0 <= share < 1:
        raise ValueError(f"unseen share must be in [0, 1), got {share}")
    if share == 0:
        return frozenset()
    rng = random.Random(f"hammer-broad/unseen/{seed}/{share}")
    chosen: set[str] = set()
    for domain in sorted(DOMAINS):
        ids = sorted(t.id for t in DOMAINS[domain])
        chosen.update(rng.sample(ids, max(1, round(share * len(ids)))))
    return frozenset(chosen)


# --------------------------------------------------------------------------- rows

KINDS = ("single", "parallel", "multiple", "none")


def _kinds(rng: random.Random, n: int) -> list[str]:
    counts = {"parallel": round(n * PARALLEL_SHARE), "multiple": round(n * MULTIPLE_SHARE),
              "none": round(n * NO_CALL_SHARE)}
    kinds = [k for k, c in counts.items() for _ in range(c)]
    kinds += ["single"] * (n - len(kinds))
    rng.shuffle(kinds)
    return kinds


def _string_values(args: Args) -> list[str]:
    out: list[str] = []
    for v in args.values():
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, list):
            out.extend(x for x in v if isinstance(x, str))
    return out


def _join(first: str, second: str, second_args: Args, rng: random.Random) -> str:
    lowered = _lower_first(second)
    if not all(s in lowered for s in _string_values(second_args)):
        lowered = second  # it starts with a value (a name): keep its case
    return f"{first} {rng.choice(_JOINERS)}{lowered}"


def _required(tool: Tool) -> list[str]:
    return [p.name for p in tool.function.params
            if p.default is _NO_DEFAULT and not p.type.endswith("optional")]


def _distinct_requests(tool: Tool, a: Args, b: Args) -> bool:
    """Whether two calls of ``tool`` differ in a required argument (defaults do not count)."""
    return any(a.get(name) != b.get(name) for name in _required(tool))


def _can_answer(tool: Tool, asked: Tool) -> bool:
    """Whether ``tool`` might answer a question meant for ``asked`` (same topic, a conflict)."""
    return tool.name == asked.name or bool(tool.topics & asked.topics) \
        or tool.name in asked.conflicts


def _make_row(rng: random.Random, kind: str, gold: list[Tool],
              offer: dict[str, list[Tool]], cluster: str) -> tuple[str, list[Tool], list[Args]]:
    """(query, candidate tools in order, calls) of one row of ``kind``; ``gold`` are the tools
    rows may be about, ``offer`` the tools that may be listed, by domain."""
    if kind == "parallel":
        first = rng.choice([t for t in gold if _required(t)] or gold)
        chosen = [first, first]
    else:
        first = rng.choice(gold)
        chosen = [first]
        if kind == "multiple":
            seconds = [t for t in gold if t.domain == first.domain and t.name != first.name
                       and t.name not in first.conflicts]
            if seconds:
                chosen.append(rng.choice(seconds))
    parts = [fn.function.make(rng) for fn in chosen]
    for _ in range(50):  # parallel calls must ask for different things, not only say it twice
        if kind != "parallel" or _distinct_requests(first, parts[0][1], parts[1][1]):
            break
        parts[1] = first.function.make(rng)
    query = parts[0][0]
    for (q, args) in parts[1:]:
        query = _join(query, q, args, rng)
    same = offer[first.domain]
    others = [t for d in CLUSTERS[cluster] if d != first.domain for t in offer[d]]
    if kind == "none":
        fits = [t for t in same if not _can_answer(t, first)]
        tools = rng.sample(fits, min(len(fits), rng.randint(2, MAX_TOOLS - 1)))
        if len(tools) < 2 or rng.random() < OTHER_DOMAIN_SHARE:
            tools.append(rng.choice([t for t in others if not _can_answer(t, first)]))
        rng.shuffle(tools)
        return query, tools, []
    right = list({t.name: t for t in chosen}.values())
    blocked = {t.name for t in right} | {c for t in right for c in t.conflicts}
    total = rng.randint(max(2, len(right)), MAX_TOOLS)
    tools = list(right)
    if total > len(tools) and rng.random() < OTHER_DOMAIN_SHARE:
        tools.append(rng.choice([t for t in others if t.name not in blocked]))
    pool = [t for t in same if t.name not in blocked]
    tools += rng.sample(pool, min(len(pool), total - len(tools)))
    rng.shuffle(tools)
    calls = [{"name": fn.name, "arguments": args} for fn, (_, args) in zip(chosen, parts)]
    return query, tools, calls


def generate_cluster(cluster: str, rows: int, seed: int = 0, *, unseen: frozenset[str] = frozenset(),
                     held_out: bool = False) -> list[str]:
    """The JSONL lines (no newlines) of ``<cluster>.jsonl`` (``held_out=False``: rows about seen
    tools, listing seen tools only) or ``<cluster>.unseen.jsonl`` (``held_out=True``: rows about
    the ``unseen`` tools; their distractors may be any tool of the cluster)."""
    domains = CLUSTERS[cluster]
    tools = [t for d in domains for t in DOMAINS[d]]
    seen = [t for t in tools if t.id not in unseen]
    gold = [t for t in tools if t.id in unseen] if held_out else seen
    offer = {d: [t for t in DOMAINS[d] if held_out or t.id not in unseen] for d in domains}
    if rows and not gold:
        raise ValueError(f"cluster {cluster!r} has no {'unseen' if held_out else 'seen'} tools")
    if rows >= UNSEEN_ID_OFFSET:
        raise ValueError(f"at most {UNSEEN_ID_OFFSET - 1} rows per file, got {rows}")
    rng = random.Random(f"hammer-broad/{cluster}/{'unseen' if held_out else 'seen'}/{seed}")
    base = (list(CLUSTERS).index(cluster) + 1) * 1_000_000 + (UNSEEN_ID_OFFSET if held_out else 0)
    done: set[tuple[str, frozenset[str], str]] = set()
    lines = []
    for line_no, kind in enumerate(_kinds(rng, rows), 1):
        for _ in range(100):
            query, listed, calls = _make_row(rng, kind, gold, offer, cluster)
            key = (query, frozenset(t.name for t in listed), json.dumps(calls, sort_keys=True))
            if key not in done:  # ingest drops rows with the same query, tool set and calls
                break
        else:
            raise RuntimeError(f"{cluster}: could not make a new {kind} row after 100 tries")
        done.add(key)
        lines.append(_row_line(base + line_no, query, [t.function.spec() for t in listed], calls))
    return lines


def split_rows(rows_per_cluster: int, cluster: str, unseen: frozenset[str]) -> tuple[int, int]:
    """(seen rows, unseen rows) of a cluster: the unseen file gets the unseen tools' share."""
    tools = [t for d in CLUSTERS[cluster] for t in DOMAINS[d]]
    held = round(rows_per_cluster * sum(t.id in unseen for t in tools) / len(tools))
    return rows_per_cluster - held, held


def generate_corpus(out_dir: str | Path, rows_per_cluster: int = DEFAULT_ROWS_PER_CLUSTER,
                    seed: int = 0, unseen_share: float = DEFAULT_UNSEEN_SHARE) -> dict[str, Any]:
    """Write ``<cluster>.jsonl`` (and ``<cluster>.unseen.jsonl`` when ``unseen_share > 0``) for
    every cluster, plus ``tools.json`` (every tool's id, name, domain, cluster and whether it is
    held out); return the summary the CLI prints."""
    out_dir = Path(out_dir)
    unseen = unseen_tools(seed, unseen_share)
    files: dict[str, int] = {}
    used: set[str] = set()
    kinds = dict.fromkeys(KINDS, 0)
    for cluster in CLUSTERS:
        n_seen, n_unseen = split_rows(rows_per_cluster, cluster, unseen)
        parts = [(f"{cluster}.jsonl", n_seen, False)]
        if unseen:
            parts.append((f"{cluster}.unseen.jsonl", n_unseen, True))
        for name, n, held_out in parts:
            lines = generate_cluster(cluster, n, seed, unseen=unseen, held_out=held_out)
            atomic_write_text(out_dir / name, "".join(line + "\n" for line in lines))
            files[name] = len(lines)
            for line in lines:
                row = json.loads(line)
                used.update(t["name"] for t in json.loads(row["tools"]))
                answers = json.loads(row["answers"])
                kinds[_kind_of(answers)] += 1
    manifest = {"seed": seed, "unseen_share": unseen_share,
                "tools": [{"id": t.id, "name": t.name, "domain": t.domain,
                           "cluster": CLUSTER_OF[t.domain], "unseen": t.id in unseen}
                          for t in all_tools()]}
    atomic_write_text(out_dir / "tools.json", json.dumps(manifest, indent=1) + "\n")
    return {"files": files, "rows": sum(files.values()), "clusters": len(CLUSTERS),
            "domains": len(DOMAINS), "tools": len(all_tools()), "tools_in_rows": len(used),
            "unseen_tools": len(unseen), "kinds": kinds}


def _kind_of(answers: list[dict[str, Any]]) -> str:
    if not answers:
        return "none"
    if len(answers) == 1:
        return "single"
    return "parallel" if answers[0]["name"] == answers[1]["name"] else "multiple"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hammer_core.data.broad_corpus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write the .jsonl files and tools.json into")
    parser.add_argument("--rows-per-cluster", type=int, default=DEFAULT_ROWS_PER_CLUSTER,
                        help="rows per cluster, seen and unseen files together "
                             f"(default {DEFAULT_ROWS_PER_CLUSTER})")
    parser.add_argument("--seed", type=int, default=0, help="seed of rows and unseen choice")
    parser.add_argument("--unseen-share", type=float, default=DEFAULT_UNSEEN_SHARE,
                        help="share of each domain's tools held out into <cluster>.unseen.jsonl "
                             f"(default {DEFAULT_UNSEEN_SHARE}; 0: no unseen files)")
    args = parser.parse_args(argv)
    if args.rows_per_cluster < 0:
        parser.error("--rows-per-cluster must be >= 0")
    try:
        summary = generate_corpus(args.out_dir, args.rows_per_cluster, args.seed,
                                  args.unseen_share)
    except ValueError as err:
        parser.error(str(err))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Readable evaluation reports: markdown tables and PNG plots.

:func:`write_eval_report` turns the eval stage's results into ``report.md`` beside three
plots (matplotlib, Agg backend, no display needed):

* ``accuracy_by_category.png`` -- AST accuracy per task of the held-out split, and per BFCL
  category when BFCL was run;
* ``relevance.png`` -- accuracy on rows that need a call vs rows that need none (and BFCL's
  relevance/irrelevance when run);
* ``robustness.png`` -- accuracy with original vs random names, per renaming mode.

The same markdown is published as a Prefect artifact and logged to MLflow with the PNGs.
:func:`write_score_markdown` renders a ``hammer eval score`` report, and
:func:`comparison_markdown` two registered versions side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hammer_core.artifacts import atomic_write_bytes, atomic_write_text

HEADLINE = (
    ("eval_rows", "rows"),
    ("exact_match", "exact match (all rows)"),
    ("ast_accuracy", "AST accuracy, BFCL rules (all rows)"),
    ("call_accuracy", "exact match (rows with calls)"),
    ("irrelevance_accuracy", "irrelevance detection (no-call rows)"),
    ("name_f1", "function-name F1 (Hammer)"),
    ("arg_f1", "argument F1 (Hammer)"),
    ("parse_failure_rate", "unparsable outputs (counted as no call)"),
)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _bar_png(path: Path, groups: list[str], series: dict[str, list[float]], title: str, ylabel: str) -> Path:
    """Grouped bar chart (one bar per series within each group), written atomically."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(groups) + 2), 3.6), dpi=100)
    for k, (label, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, values, width=width, label=label)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=1)
    ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center",
                  fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: same input, same bytes
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_eval_report(out_dir: str | Path, metrics: dict[str, Any], *, robustness: dict[str, dict[str, float]] | None = None,
                      bfcl: dict[str, Any] | None = None) -> Path:
    """``report.md`` + PNGs for the eval stage; returns the markdown's path."""
    out = Path(out_dir)
    parts = ["# Evaluation report", "", "## Held-out split", ""]
    if any(k.startswith("base/") for k in metrics):  # eval.baseline: the zero-shot base beside it
        parts += ["The base model zero-shot and the fine-tuned model, on the same prompts.", "",
                  table(["metric", "base (zero-shot)", "fine-tuned"],
                        [[label, metrics.get(f"base/{k}", ""), metrics[k]] for k, label in HEADLINE if k in metrics])]
    else:
        parts += [table(["metric", "value"], [[label, metrics[k]] for k, label in HEADLINE if k in metrics])]

    tasks = sorted(k.split("/", 1)[1] for k in metrics if k.startswith("exact_match/"))
    if tasks:
        parts += ["", "### Per task", "",
                  table(["task", "exact match", "AST accuracy"],
                        [[t, metrics[f"exact_match/{t}"], metrics.get(f"ast_accuracy/{t}", "")] for t in tasks])]

    groups = [f"task:{t}" for t in tasks]
    values = [metrics.get(f"ast_accuracy/{t}", metrics[f"exact_match/{t}"]) for t in tasks]
    if bfcl:
        groups += list(bfcl["categories"])
        values += [v["accuracy"] for v in bfcl["categories"].values()]
    if groups:
        _bar_png(out / "accuracy_by_category.png", groups, {"accuracy": values}, "Accuracy per category",
                 "accuracy")
        parts += ["", "![accuracy per category](accuracy_by_category.png)"]

    n_rows, n_none = metrics.get("eval_rows", 0), metrics.get("no_call_rows", 0)
    rel = [("held-out: needs a call", n_rows - n_none, metrics.get("call_accuracy", 0.0)),
           ("held-out: no call", n_none, metrics.get("irrelevance_accuracy", 0.0))]
    if bfcl:
        for cat, label in (("live_relevance", "BFCL relevance"), ("irrelevance", "BFCL irrelevance"),
                           ("live_irrelevance", "BFCL live irrelevance")):
            if cat in bfcl["categories"]:
                rel.append((label, bfcl["categories"][cat]["total"], bfcl["categories"][cat]["accuracy"]))
    rel = [r for r in rel if r[1]]
    rel_groups, rel_values = [r[0] for r in rel], [r[2] for r in rel]
    parts += ["", "## Irrelevance vs relevance", "",
              "Rows that need a call are scored by exact match; rows that need none pass when the model "
              "makes no call (unparsable output counts as no call).", "",
              table(["rows", "count", "accuracy"], [list(r) for r in rel]), "",
              "![irrelevance vs relevance](relevance.png)"]
    _bar_png(out / "relevance.png", rel_groups, {"accuracy": rel_values}, "Irrelevance vs relevance", "accuracy")

    if robustness:
        modes = list(robustness)
        parts += ["", "## Robustness: names replaced by random strings", "",
                  "Hammer's study: the same rows with function names, parameter names, or both replaced at "
                  "evaluation time; AST accuracy on the same rows before and after.", "",
                  table(["names replaced", "rows", "original", "renamed", "drop"],
                        [[m, v["rows"], v["original"], v["renamed"], v["drop"]] for m, v in robustness.items()]),
                  "", "![robustness](robustness.png)"]
        _bar_png(out / "robustness.png", modes,
                 {"original names": [robustness[m]["original"] for m in modes],
                  "random names": [robustness[m]["renamed"] for m in modes]},
                 "Robustness to renamed functions and parameters", "AST accuracy")

    if bfcl:
        base = any(k.startswith("base/bfcl/") for k in metrics)
        parts += ["", f"## BFCL (adapter: {bfcl['task']})", "",
                  table(["category", "total", "correct", "accuracy", "parse failures"]
                        + (["base (zero-shot) accuracy"] if base else []),
                        [[c, v["total"], v["correct"], v["accuracy"], v["parse_failures"]]
                         + ([metrics.get(f"base/bfcl/{c}", "")] if base else [])
                         for c, v in bfcl["categories"].items()])]
        if bfcl.get("summary"):
            parts += ["", table(["BFCL summary", "accuracy"], [[k, v] for k, v in bfcl["summary"].items()])]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path


def write_score_markdown(report: dict[str, Any], path: str | Path) -> Path:
    """Markdown for a ``hammer eval score`` report (no per-id verdicts: those stay in the JSON)."""
    parts = [f"# Scores: {report['dataset']}", "",
             f"Predictions: `{report['predictions']}` -- {report['correct']}/{report['total']} correct "
             f"(accuracy {report['accuracy']:.3f}); {report['missing_predictions']} ids without a prediction, "
             f"{report['parse_failures']} unparsable outputs, {len(report['unmatched_predictions'])} predictions "
             "for unknown ids.", "",
             table(["category", "total", "correct", "accuracy", "parse failures", "missing"],
                   [[c, v["total"], v["correct"], v["accuracy"], v["parse_failures"], v["missing"]]
                    for c, v in report["categories"].items()])]
    if report.get("summary"):
        parts += ["", table(["BFCL summary", "accuracy"], [[k, v] for k, v in report["summary"].items()])]
    if report.get("hammer"):
        parts += ["", table(["Hammer metric", "value"], [[k, v] for k, v in report["hammer"].items()])]
    if report.get("rules"):
        parts += ["", "Failing rules:", "", table(["rule", "count"], [[k, v] for k, v in report["rules"].items()])]
    path = Path(path)
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path


def comparison_markdown(title: str, labels: tuple[str, str], a: dict[str, float], b: dict[str, float]) -> str:
    """Two metric dicts side by side with the difference (b - a), keys in sorted order."""
    rows = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        delta = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else ""
        rows.append([k, "" if va is None else va, "" if vb is None else vb,
                     f"{delta:+.3f}" if delta != "" else ""])
    return f"# {title}\n\n" + table(["metric", labels[0], labels[1], "change"], rows) + "\n"

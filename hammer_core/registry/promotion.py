"""The champion gate and version comparison on the registered model's eval metrics.

:func:`promote` (``registry.promotion``) moves the alias ``champion`` to a version only if it
beats the current champion by more than ``min_delta`` on every configured metric, and records why
as version tags (``hammer.promotion.decision`` / ``hammer.promotion.reason``).
:func:`compare_versions` (``hammer eval compare``) sets the eval metrics of two registered
versions side by side.
"""

from __future__ import annotations

from typing import Any

from hammer_core import mlflow_store
from hammer_core.config import PipelineConfig
from hammer_core.evaluation.reports import comparison_markdown, table

CANDIDATE, CHAMPION = "candidate", "champion"
EVAL_TAG = "hammer.eval."              # + metric name: the version's eval metrics, as tags
DECISION_TAG = "hammer.promotion.decision"
REASON_TAG = "hammer.promotion.reason"


def promote(cfg: PipelineConfig, version: str | int, *, force: bool = False,
            model_name: str | None = None) -> dict[str, Any]:
    """The champion gate: move alias ``champion`` to ``version`` if it earns it.

    ``version`` is a number or an alias (``@candidate``). With no champion yet the version is
    promoted ("first version"); otherwise only if it beats the champion by more than
    ``registry.promotion.min_delta`` on every metric of ``registry.promotion.metrics`` in that
    metric's direction (a tie is not enough; a metric missing on either side blocks it).
    ``force=True`` promotes regardless. The decision is recorded on the version as tags
    (``hammer.promotion.decision``, ``hammer.promotion.reason``). Returns ``{"promoted",
    "version", "champion_before", "champion_after", "reason", "table": [{"metric",
    "direction", "candidate", "champion", "delta", "passes"}], "markdown"}``::

        from hammer_core.config import load_config
        from hammer_core.registry.promotion import promote

        cfg = load_config("data/configs/demo.yaml")
        res = promote(cfg, "@candidate")        # or a version number; force=True to override
        print(res["promoted"], res["reason"])
        print(res["markdown"])
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_store.client(mlflow_store.preflight(cfg))
    name = model_name or cfg.registry.model_name
    gate = cfg.registry.promotion
    mv = _get_version(client, name, version)
    try:
        champ = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champ = None
    before = int(champ.version) if champ is not None else None
    ver = int(mv.version)

    cand_metrics = _version_metrics(client, mv)
    champ_metrics = _version_metrics(client, champ) if champ is not None else {}
    table = []
    for metric, direction in gate.metrics.items():
        c, h = cand_metrics.get(metric), champ_metrics.get(metric)
        delta = None if c is None or h is None else round(c - h, 6)
        gain = None if delta is None else (delta if direction == "max" else -delta)
        table.append({"metric": metric, "direction": direction, "candidate": c, "champion": h, "delta": delta,
                      "passes": gain is not None and gain > gate.min_delta})

    bases = [(v.tags or {}).get("hammer.base_model") for v in (mv, champ) if v is not None]
    if champ is not None and int(champ.version) == ver:
        promoted, decision = False, "already-champion"
        reason = f"version {ver} is already the champion"
    elif force:
        promoted, decision = True, "forced"
        reason = "forced" + (f" (replaces champion version {before})" if before is not None else "")
    elif champ is None:
        promoted, decision = True, "promoted"
        reason = "first version: there was no champion yet"
    elif len(set(bases)) > 1:  # like with like: another base model's scores say nothing about this one
        promoted, decision = False, "rejected"
        reason = (f"the champion version {before} is built on base model {bases[1]!r}, this version on "
                  f"{bases[0]!r}: their metrics are not comparable; give each base model its own "
                  "registry.model_name, or promote by hand with --force")
    else:
        promoted = all(row["passes"] for row in table)
        decision = "promoted" if promoted else "rejected"
        reason = (f"beats champion version {before} by more than {gate.min_delta:g} on every metric: "
                  if promoted else f"does not beat champion version {before}: ") + "; ".join(
            _row_reason(row, gate.min_delta, promoted) for row in table if promoted or not row["passes"])

    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(ver))
        if champ is not None:
            client.set_model_version_tag(name, champ.version, "hammer.promotion.replaced_by", str(ver))
    after = ver if promoted else before
    for key, value in ((DECISION_TAG, decision), (REASON_TAG, reason[:4900]),
                       ("hammer.promotion.champion_before", "none" if before is None else str(before))):
        client.set_model_version_tag(name, str(ver), key, value)
    res = {"model_name": name, "promoted": promoted, "version": ver, "champion_before": before,
           "champion_after": after, "decision": decision, "reason": reason, "table": table}
    res["markdown"] = promotion_markdown(res, gate.min_delta)
    return res


def _row_reason(row: dict[str, Any], min_delta: float, promoted: bool) -> str:
    m = row["metric"]
    if row["candidate"] is None or row["champion"] is None:
        sides = [s for s in ("candidate", "champion") if row[s] is None]
        return f"{m} is missing on the {' and the '.join(sides)}"
    better = "higher" if row["direction"] == "max" else "lower"
    if promoted:
        return f"{m} {row['candidate']:g} vs {row['champion']:g} ({row['delta']:+g})"
    if row["delta"] == 0:
        return f"{m} ties at {row['candidate']:g} ({better} is better; a tie is not enough)"
    return (f"{m} {row['candidate']:g} vs {row['champion']:g} ({row['delta']:+g}; needs {better} "
            f"by more than {min_delta:g})")


def promotion_markdown(res: dict[str, Any], min_delta: float) -> str:
    verdict = {"promoted": "promoted to champion", "forced": "promoted to champion (forced)",
               "rejected": "not promoted", "already-champion": "already the champion"}[res["decision"]]
    champ = "none" if res["champion_before"] is None else f"v{res['champion_before']}"
    rows = [[r["metric"], r["direction"], "—" if r["candidate"] is None else r["candidate"],
             "—" if r["champion"] is None else r["champion"],
             "—" if r["delta"] is None else f"{r['delta']:+.4f}", "yes" if r["passes"] else "no"] for r in res["table"]]
    return (f"# {res['model_name']} v{res['version']}: {verdict}\n\n{res['reason']}\n\n"
            + table(["metric", "direction", f"candidate v{res['version']}", f"champion {champ}", "delta",
                     f"beats by > {min_delta:g}"], rows) + "\n")


def _get_version(client: Any, name: str, ref: str | int) -> Any:
    ref = str(ref).strip()
    if ref.isdigit():
        return client.get_model_version(name, ref)
    return client.get_model_version_by_alias(name, ref.lstrip("@"))


def _version_metrics(client: Any, mv: Any) -> dict[str, float]:
    """A version's eval metrics: its run's ``eval/*`` metrics, else its ``hammer.eval.*`` tags."""
    out: dict[str, float] = {}
    for k, v in (mv.tags or {}).items():
        if k.startswith(EVAL_TAG):
            try:
                out[k.removeprefix(EVAL_TAG)] = float(v)
            except ValueError:
                pass
    if mv.run_id:
        from mlflow.exceptions import MlflowException

        try:
            run_metrics = client.get_run(mv.run_id).data.metrics
        except MlflowException:  # a deleted run: the tags still tell
            run_metrics = {}
        out.update({k.removeprefix("eval/"): float(v) for k, v in run_metrics.items() if k.startswith("eval/")})
    return out


def compare_versions(cfg: PipelineConfig, a: str | int, b: str | int, *, model_name: str | None = None) -> dict[str, Any]:
    """Eval metrics of two registered versions side by side.

    ``a`` and ``b`` are version numbers or aliases (``@candidate``, ``champion``); the metrics
    are the ``eval/*`` metrics of the run that logged each version. Returns ``{"model_name",
    "a": {"version", "run_id", "metrics"}, "b": {...}, "delta": {metric: b - a}, "markdown"}``::

        res = compare_versions(cfg, 1, "@candidate")
        print(res["markdown"])      # or: hammer eval compare --config cfg.yaml --a 1 --b @candidate
    """
    client = mlflow_store.client(mlflow_store.preflight(cfg))
    name = model_name or cfg.registry.model_name

    def side(ref: str | int) -> dict[str, Any]:
        mv = _get_version(client, name, ref)
        if not mv.run_id:
            raise ValueError(f"{name} version {mv.version} has no run, so no eval metrics")
        run_metrics = client.get_run(mv.run_id).data.metrics
        return {"version": int(mv.version), "run_id": mv.run_id,
                "metrics": {k.removeprefix("eval/"): v for k, v in sorted(run_metrics.items()) if k.startswith("eval/")}}

    left, right = side(a), side(b)
    delta = {k: round(right["metrics"][k] - left["metrics"][k], 6)
             for k in left["metrics"] if k in right["metrics"]}
    md = comparison_markdown(f"{name}: version {left['version']} vs {right['version']}",
                             (f"v{left['version']}", f"v{right['version']}"), left["metrics"], right["metrics"])
    return {"model_name": name, "a": left, "b": right, "delta": delta, "markdown": md}


__all__ = ["CANDIDATE", "CHAMPION", "DECISION_TAG", "EVAL_TAG", "REASON_TAG", "compare_versions", "promote",
           "promotion_markdown"]

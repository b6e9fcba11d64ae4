"""The benchmark scripts' own behaviour: results land in their section of a results file without
touching the prose around it, and the quality benchmark runs each arm's evaluations on the same
held-out rows (tiny preset, a few steps: the figures themselves are not the point here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks import bench_quality
from benchmarks.machine import write_section


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nHand-written prose.\n\n<!-- other:begin -->\nkeep me\n<!-- other:end -->\n")
    write_section(results, "arms", "first")
    write_section(results, "arms", "second\n")
    text = results.read_text()
    assert text.count("<!-- arms:begin -->") == 1 and "first" not in text
    assert "<!-- arms:begin -->\nsecond\n<!-- arms:end -->" in text
    assert text.startswith("# Results\n\nHand-written prose.\n") and "keep me" in text
    write_section(results, "other", "replaced")
    assert "keep me" not in results.read_text() and "second" in results.read_text()
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_bench_quality_scores_every_arm_on_the_same_rows_and_keeps_the_prose(tmp_path: Path) -> None:
    out = tmp_path / "quality.md"
    out.write_text("# Quality\n\nThe curve measured by hand.\n")
    assert bench_quality.main([
        "--model", "hammer-tiny-qwen2", "--config", str(bench_quality.REPO / "data/configs/demo.yaml"),
        "--broad", "24", "--arms", "no_mask,irr0", "--steps", "1", "--bfcl", "2", "--robustness-rows", "3",
        "--work", str(tmp_path / "work"), "--out", str(out),
        "--set", "eval.max_new_tokens=8", "--set", "train.checkpoint_every=0"]) == 0
    text = out.read_text()
    assert text.startswith("# Quality\n\nThe curve measured by hand.\n")
    runs = {r["arm"]: r["metrics"] for r in json.loads(re.search(r"```json\n(.*?)\n```", text, re.S).group(1))}
    assert list(runs) == ["tuned", "no_mask", "irr0"]  # tuned first: the reference every arm is read against
    assert len({m["eval_rows"] for m in runs.values()}) == 1  # one held-out split for every arm
    tuned, no_mask, irr0 = runs["tuned"], runs["no_mask"], runs["irr0"]
    # the base zero-shot and all three BFCL categories beside the tuned arm only
    assert {"base/call_accuracy", "base/bfcl/multiple", "bfcl/simple_python", "bfcl/multiple",
            "bfcl/irrelevance", "unseen/call_accuracy", "unseen/base/call_accuracy"} <= set(tuned)
    assert not any(k.startswith("base/") for k in no_mask) and not any(k.startswith("base/") for k in irr0)
    # claim a (masking) needs the robustness study and the unseen tools, not BFCL
    assert any(k.startswith("robustness/") for k in no_mask) and "unseen/call_accuracy" in no_mask
    assert not any(k.startswith("bfcl/") for k in no_mask)
    # claim b (irrelevance share) needs BFCL's irrelevance and simple questions, not robustness
    assert {"bfcl/simple_python", "bfcl/irrelevance"} <= set(irr0) and "bfcl/multiple" not in irr0
    assert not any(k.startswith(("robustness/", "unseen/")) for k in irr0)
    assert "| no_mask | `prepare.mask_prob=0.0` |" in text

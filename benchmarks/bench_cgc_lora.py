"""Benchmark of CGC-LoRA: train-step cost against PEFT LoRA, and merged inference against the base.

Two questions from the CGC-LoRA issue, each answered as a ratio measured in the same run:

1. **Train step** -- a CGC-LoRA step (forward + backward + AdamW step, mixed-task batch) on a
   Qwen2-architecture model costs at most 1.15x a PEFT LoRA step of the *same total rank*
   (``E * r_expert``, i.e. PEFT ``r = (n_common + n_tasks * n_specific) * r_expert``) on the
   same model, targeting the same modules.
2. **Merged inference** -- a task merged into the base weights (``merge_task_into_base``) runs
   a forward pass and greedy ``generate`` at the cost of the untouched base model (ratio
   within 1.02).

Timings are interleaved (A, B, B, A, ...) so that load from other processes hits both sides
alike. Both the CPU time of this process and the wall time are recorded. The headline ratio
is on CPU time -- the median over rounds of the per-round ratio (both sides timed back to
back) -- because on a small shared machine wall time mostly measures how long the process
waited for a core; wall-time ratios, ratios of medians and of minima are reported beside it.
Torch runs on one thread by default (``--threads``) for the same reason: a multi-threaded
matmul stalls whenever another process takes a core. Figures (JSON + a markdown table) go to
``benchmarks/results/cgc_lora.md`` with the machine description.

Run::

    .venv/bin/python benchmarks/bench_cgc_lora.py            # full run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/bench_cgc_lora.py --quick    # smoke run, does not write results
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.machine import machine  # noqa: E402

from hammer_core.artifacts import atomic_write_text  # noqa: E402
from hammer_core.model.cgc_lora import CGCLoraConfig, inject_cgc_lora, merge_task_into_base  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "cgc_lora.md"
TRAIN_TARGET = 1.15
MERGED_TARGET = 1.02


# ------------------------------------------------------------------------------ machine

# -------------------------------------------------------------------------------- model
def make_base(hidden: int, layers: int, vocab: int, seed: int = 0) -> transformers.Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
    )
    return transformers.Qwen2ForCausalLM(cfg).float()


def perturb(params: list[nn.Parameter], seed: int = 1) -> None:
    """LoRA B starts at zero; give every adapter parameter seeded noise so deltas are real."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)


def peft_lora(base: nn.Module, rank: int, alpha: float) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none",
                     task_type="CAUSAL_LM")
    return get_peft_model(base, cfg)


# ------------------------------------------------------------------------------- timing
def interleaved(fns: dict[str, Callable[[], Any]], reps: int, warmup: int) -> dict[str, dict[str, list[float]]]:
    """Run every fn ``warmup`` times, then ``reps`` rounds of one call each (order alternating).

    Returns ``{"cpu": {name: seconds}, "wall": {name: seconds}}``.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, dict[str, list[float]]] = {"cpu": {n: [] for n in fns}, "wall": {n: [] for n in fns}}
    names = list(fns)
    for rep in range(reps):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            cpu, wall = time.process_time(), time.perf_counter()
            fns[name]()
            times["wall"][name].append(time.perf_counter() - wall)
            times["cpu"][name].append(time.process_time() - cpu)
    return times


def _bootstrap_ci(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the median of ``values`` (seeded: same data, same interval)."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return medians[int(0.025 * n)], medians[int(0.975 * n) - 1]


def _stats(times: dict[str, list[float]], baseline: str) -> dict[str, Any]:
    med = {name: statistics.median(ts) for name, ts in times.items()}
    low = {name: min(ts) for name, ts in times.items()}
    # Per-round ratio (both timed back to back), median over rounds: robust to slow phases.
    paired = {k: [a / b for a, b in zip(ts, times[baseline])] for k, ts in times.items() if k != baseline}
    return {
        "median_s": {k: round(v, 5) for k, v in med.items()},
        "min_s": {k: round(v, 5) for k, v in low.items()},
        "ratio_paired": {k: round(statistics.median(r), 4) for k, r in paired.items()},
        "ratio_paired_ci95": {k: [round(x, 4) for x in _bootstrap_ci(r)] for k, r in paired.items()},
        "ratio_median": {k: round(med[k] / med[baseline], 4) for k in paired},
        "ratio_min": {k: round(low[k] / low[baseline], 4) for k in paired},
    }


def summarize(times: dict[str, dict[str, list[float]]], baseline: str) -> dict[str, Any]:
    """CPU-time and wall-time statistics against ``baseline``; ``cpu.ratio_paired`` is the headline."""
    return {"reps": len(times["cpu"][baseline]), "cpu": _stats(times["cpu"], baseline),
            "wall": _stats(times["wall"], baseline)}


# --------------------------------------------------------------------------- section 1
def train_step_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], float]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    model.train()

    def step() -> float:
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def bench_train(setting: dict[str, Any], reps: int, warmup: int) -> dict[str, Any]:
    tasks = [f"task{i}" for i in range(setting["n_tasks"])]
    cgc_cfg = CGCLoraConfig(tasks=tasks, n_common=setting["n_common"], n_specific=setting["n_specific"],
                            r_expert=setting["r_expert"], alpha=16.0)
    total_rank = cgc_cfg.n_experts * cgc_cfg.r_expert
    shape = (setting["batch"], setting["seq"])
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, setting["vocab"], shape, generator=gen)
    task_ids = torch.randint(0, len(tasks), (shape[0],), generator=gen)  # a mixed-task batch

    arch = dict(hidden=setting["hidden"], layers=setting["layers"], vocab=setting["vocab"])
    cgc = inject_cgc_lora(make_base(**arch), cgc_cfg)
    perturb(cgc.trainable_parameters())
    lora = peft_lora(make_base(**arch), total_rank, alpha=16.0)
    perturb([p for p in lora.parameters() if p.requires_grad])

    fns = {
        "peft_lora": train_step_fn(lora, {"input_ids": ids, "labels": ids}),
        "cgc_lora": train_step_fn(cgc, {"input_ids": ids, "labels": ids, "task_ids": task_ids}),
    }
    times = interleaved(fns, reps, warmup)
    result = {"setting": {**setting, "total_rank": total_rank, "export_rank": cgc_cfg.export_rank,
                          "trainable_cgc": cgc.num_trainable(),
                          "trainable_peft": sum(p.numel() for p in lora.parameters() if p.requires_grad)},
              **summarize(times, "peft_lora")}
    del cgc, lora
    return result


# --------------------------------------------------------------------------- section 2
def bench_merged(setting: dict[str, Any], reps: int, warmup: int) -> dict[str, Any]:
    tasks = ["a", "b", "c"]
    arch = dict(hidden=setting["hidden"], layers=setting["layers"], vocab=setting["vocab"])
    cgc = inject_cgc_lora(make_base(**arch), CGCLoraConfig(tasks=tasks))
    perturb(cgc.trainable_parameters())
    merged = merge_task_into_base(cgc, "b").eval()
    del cgc
    base = make_base(**arch).eval()

    gen = torch.Generator().manual_seed(4)
    fwd_ids = torch.randint(0, setting["vocab"], (setting["batch"], setting["seq"]), generator=gen)
    prompt = torch.randint(0, setting["vocab"], (setting["gen_batch"], setting["prompt"]), generator=gen)
    gen_kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=setting["new_tokens"],
                      min_new_tokens=setting["new_tokens"], do_sample=False, pad_token_id=0)

    def forward(model: nn.Module) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode():
                return model(input_ids=fwd_ids).logits

        return run

    def generate(model: nn.Module) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode():
                return model.generate(prompt, **gen_kwargs)

        return run

    with torch.inference_mode():  # the merge really changed the weights (not a no-op comparison)
        merge_delta = (merged(input_ids=prompt).logits - base(input_ids=prompt).logits).abs().max().item()
    # Why the cost is the same: identical module classes and identically laid-out parameters.
    same_structure = [(n, type(m)) for n, m in merged.named_modules()] == [
        (n, type(m)) for n, m in base.named_modules()
    ] and [(n, p.shape, p.dtype, p.stride()) for n, p in merged.named_parameters()] == [
        (n, p.shape, p.dtype, p.stride()) for n, p in base.named_parameters()
    ]
    fwd = summarize(interleaved({"base": forward(base), "merged": forward(merged)}, reps, warmup), "base")
    gen_t = summarize(interleaved({"base": generate(base), "merged": generate(merged)}, reps, warmup), "base")
    return {"setting": setting, "max_abs_logit_delta_vs_base": round(merge_delta, 5),
            "same_structure_as_base": same_structure, "forward": fwd, "generate": gen_t}


# --------------------------------------------------------------------------------- report
def _ci(stats: dict[str, Any], name: str) -> str:
    low, high = stats["ratio_paired_ci95"][name]
    return f"{low:.3f} - {high:.3f}"


def markdown(info: dict[str, Any], train: list[dict[str, Any]], merged: dict[str, Any]) -> str:
    m = info
    lines = [
        "# CGC-LoRA benchmark",
        "",
        f"Machine: {m['arch']}, {m['nproc']} cores ({m['torch_threads']} torch threads), {m['cpu']}; "
        f"torch {m['torch']}, transformers {m['transformers']}; {m['date']}.",
        "Produced by `benchmarks/bench_cgc_lora.py`; interleaved repetitions, ratios measured in the same "
        "run. Headline: `ratio (CPU, paired)` = median over rounds of the per-round ratio of process CPU "
        "time (both sides timed back to back); times in the tables are CPU-time medians. Wall-time "
        "figures are in the JSON (on a shared machine they mostly measure waiting for a core).",
        "",
        f"## Train step: CGC-LoRA vs PEFT LoRA of the same total rank (target <= {TRAIN_TARGET})",
        "",
        "Qwen2 architecture, fp32, CPU; forward + backward + AdamW step; mixed-task batch; all attention "
        "and MLP linears adapted.",
        "",
        "| model (hidden x layers, vocab) | batch x seq | tasks / common / specific / r | total rank | "
        "PEFT LoRA CPU s | CGC-LoRA CPU s | **ratio (CPU, paired)** | 95% CI | CPU ratio of minima | "
        "wall ratio (paired) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in train:
        s, cpu, wall = res["setting"], res["cpu"], res["wall"]
        lines.append(
            f"| {s['hidden']} x {s['layers']}, {s['vocab']} | {s['batch']} x {s['seq']} | "
            f"{s['n_tasks']} / {s['n_common']} / {s['n_specific']} / {s['r_expert']} | {s['total_rank']} | "
            f"{cpu['median_s']['peft_lora']:.3f} | {cpu['median_s']['cgc_lora']:.3f} | "
            f"**{cpu['ratio_paired']['cgc_lora']:.3f}** | {_ci(cpu, 'cgc_lora')} | "
            f"{cpu['ratio_min']['cgc_lora']:.3f} | "
            f"{wall['ratio_paired']['cgc_lora']:.3f} |"
        )
    s = merged["setting"]
    lines += [
        "",
        f"## Merged inference: `merge_task_into_base` vs the untouched base (target ratio <= {MERGED_TARGET})",
        "",
        f"Model {s['hidden']} x {s['layers']}, vocab {s['vocab']}, fp32. Forward: batch {s['batch']} x "
        f"{s['seq']}; generate: greedy, batch {s['gen_batch']}, prompt {s['prompt']}, "
        f"{s['new_tokens']} new tokens, KV cache. The merged model has the base's module classes and "
        f"parameter shapes, dtypes and strides: {merged['same_structure_as_base']}; it differs from the "
        f"base (max abs logit difference {merged['max_abs_logit_delta_vs_base']}).",
        "",
        "| pass | base CPU s | merged CPU s | **ratio (CPU, paired)** | 95% CI | CPU ratio of minima | "
        "wall ratio (paired) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("forward", "generate"):
        cpu, wall = merged[name]["cpu"], merged[name]["wall"]
        lines.append(f"| {name} | {cpu['median_s']['base']:.4f} | {cpu['median_s']['merged']:.4f} | "
                     f"**{cpu['ratio_paired']['merged']:.3f}** | {_ci(cpu, 'merged')} | "
                     f"{cpu['ratio_min']['merged']:.3f} | "
                     f"{wall['ratio_paired']['merged']:.3f} |")
    payload = {"machine": info, "train_step": train, "merged_inference": merged,
               "targets": {"train_ratio_max": TRAIN_TARGET, "merged_ratio_max": MERGED_TARGET}}
    lines += ["", "## Raw figures", "", "```json", json.dumps(payload, indent=2), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=12, help="rounds per train-step comparison")
    parser.add_argument("--merged-reps", type=int, default=40, help="rounds per merged-inference comparison")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see module doc)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few reps, no results file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    common = dict(hidden=512, layers=4, vocab=4096, batch=8, seq=256)
    train_settings = [
        {**common, "n_tasks": 3, "n_common": 2, "n_specific": 1, "r_expert": 4},
        {**common, "n_tasks": 4, "n_common": 2, "n_specific": 2, "r_expert": 8},
    ]
    merged_setting = {**common, "gen_batch": 4, "prompt": 64, "new_tokens": 32}
    reps, merged_reps, warmup = args.reps, args.merged_reps, args.warmup
    if args.quick:
        small = dict(hidden=128, layers=2, vocab=512, batch=2, seq=32)
        train_settings = [{**s, **small} for s in train_settings]
        merged_setting = {**merged_setting, **small, "new_tokens": 4}
        reps, merged_reps, warmup = 3, 6, 1

    info = machine("transformers", torch_threads=torch.get_num_threads())
    train = []
    for setting in train_settings:
        res = bench_train(setting, reps, warmup)
        print(json.dumps({k: res[k] for k in ("cpu", "wall")}), flush=True)
        train.append(res)
    merged = bench_merged(merged_setting, merged_reps, warmup)
    print(json.dumps({k: merged[k] for k in ("forward", "generate")}), flush=True)
    if not args.quick:
        atomic_write_text(RESULTS, markdown(info, train, merged))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

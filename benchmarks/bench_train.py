"""Benchmark of the train stage: tokens/s per process in 1 and 2 processes, and (on a GPU)
bf16 tokens/s and model FLOPs utilization of a Qwen2.5-1.5B-architecture model at sequence 2048.

What is timed is the real training step of :class:`hammer_core.train.trainer.Run` (DeepSpeed
engine, CGC-LoRA, the globally normalized loss, gradient averaging, AdamW, LR schedule) in
worker processes started by ``torchrun``, exactly as ``hammer train`` runs them. Models:

* ``tiny`` -- the built-in preset (Qwen2 architecture, hidden 128, 2 layers, vocab 8192);
* ``qwen2.5-1.5b`` -- Qwen2.5-1.5B's architecture (hidden 1536, 28 layers, 12 / 2 heads,
  intermediate 8960, vocab 151936, tied embeddings) with random weights: nothing is downloaded.

Every row is a fixed-length synthetic sequence (half prompt, half answer), so a step processes
``batch x seq`` tokens per process. Each configuration runs ``--warmup`` untimed steps, then
``--steps`` timed ones between barriers; the figure is the median step. The headline is the
**scaling ratio**: tokens/s per process with 2 processes over tokens/s with 1, measured in the
same run (1.0 = data parallelism costs nothing; each process gets ``--threads`` threads, 1 by
default, so the 2-process run uses twice the cores rather than splitting them).

**GPU** (run automatically when CUDA is available, or skipped with a note): the 1.5B config in
bf16 at sequence 2048 on one GPU; ``MFU = tokens/s x FLOPs per token / peak FLOP/s``. With a
frozen base only activation gradients flow through the base, so::

    FLOPs/token = 4 * N_linear              (forward + input-gradient backward of every linear)
                + 12 * layers * seq * hidden (attention scores and values: forward + backward)
                + 6 * N_adapter             (CGC-LoRA: forward, input and weight gradients)

(``N_linear`` counts every linear weight, the LM head included; no causal discount; recomputed
activations are not counted, so this is MFU, not hardware FLOPs utilization). The peak is
989 TFLOP/s bf16 dense for an H100 SXM / H200, 756 for an H100 PCIe (``--peak-tflops``
overrides). Target from the issue: at least 45% on one H100.

Figures (JSON + a markdown table) go to ``benchmarks/results/train.md`` with the machine
description and where every figure came from::

    .venv/bin/python benchmarks/bench_train.py          # full run (several minutes on 2 CPU cores)
    .venv/bin/python benchmarks/bench_train.py --quick  # smoke run of the tiny model, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.machine import machine  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "train.md"
MFU_TARGET = 0.45

QWEN25_15B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True,
                  rope_theta=1_000_000.0, rms_norm_eps=1e-6)

# (batch per process, sequence length, timed steps, warmup steps) per model on CPU
CPU_SETTINGS = {"tiny": (8, 256, 10, 3), "qwen2.5-1.5b": (1, 128, 3, 1)}
GPU_SETTING = ("qwen2.5-1.5b", 4, 2048, 10, 3)


def peak_flops(device_name: str) -> float | None:
    """bf16 dense peak of the GPU, from its name."""
    name = device_name.upper()
    if "H100" in name:
        return 756e12 if "PCIE" in name else 989e12
    if "H200" in name:
        return 989e12
    if "A100" in name:
        return 312e12
    return None


def machine_info() -> dict[str, Any]:
    import torch

    return machine("deepspeed", gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)


# ------------------------------------------------------------------------------- worker
def write_rows(path: Path, rows: int, seq: int, vocab: int) -> None:
    import numpy as np
    import pyarrow as pa

    from hammer_core.artifacts import write_table

    rng = np.random.default_rng(0)
    table = pa.table({"id": [f"b{i}" for i in range(rows)], "task": [("a", "b", "c")[i % 3] for i in range(rows)],
                      "input_ids": pa.array([rng.integers(10, vocab, seq).astype(np.int32).tolist()
                                             for _ in range(rows)], type=pa.list_(pa.int32())),
                      "n_prompt": pa.array([seq // 2] * rows, type=pa.int32())})
    write_table(table, path, kind="tokens")


def worker(args: argparse.Namespace) -> None:
    """One torchrun worker: build the Run with the benchmark's base model, time its steps."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from hammer_core.artifacts import open_artifact
    from hammer_core.config import config_from_dict
    from hammer_core.train.distributed import init_process_group
    from hammer_core.model.base import build_tiny_model
    from hammer_core.model.tokenizer import load_tiny_tokenizer
    from hammer_core.train.trainer import Run

    rank, world = init_process_group()
    torch.set_num_threads(args.threads)

    class BenchRun(Run):
        def load_base(self) -> tuple[Any, nn.Module]:
            tokenizer = load_tiny_tokenizer()  # only its pad id is used: rows are synthetic
            if args.model == "tiny":
                return tokenizer, build_tiny_model(len(tokenizer), seed=0)
            from transformers import Qwen2Config, Qwen2ForCausalLM

            torch.manual_seed(0)
            return tokenizer, Qwen2ForCausalLM(Qwen2Config(**QWEN25_15B))

    cfg = config_from_dict({
        "output_dir": str(args.work), "model": {"name_or_path": f"bench:{args.model}"},
        "train": {"max_steps": args.warmup + args.steps, "batch_size": args.batch, "warmup_steps": 0, "lr": 1e-4,
                  "track": False, "checkpoint_every": 0, "resume": False, "group_by_length": False,
                  "gradient_checkpointing": args.gradient_checkpointing}})
    run = BenchRun(cfg, open_artifact(args.rows), args.work / "train", False, rank, world)
    run.build()
    base = run.model.base_model
    n_linear = sum(getattr(m.weight, "ds_numel", m.weight.numel()) for m in base.modules() if isinstance(m, nn.Linear))
    arch = base.config
    times, cpu_times = [], []
    for i in range(args.warmup + args.steps):
        dist.barrier()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        run.step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        cpu = torch.tensor([time.process_time() - cpu_start], dtype=torch.float64, device=run.device)
        dist.barrier()
        dist.all_reduce(cpu)  # mean CPU time of the processes' step
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(float(cpu) / world)
    if rank == 0:
        step = statistics.median(times)
        cpu_step = statistics.median(cpu_times)
        tokens = args.batch * args.seq  # per process and step
        flops_per_token = (4 * n_linear + 12 * arch.num_hidden_layers * args.seq * arch.hidden_size
                           + 6 * run.n_trainable)
        result = {"model": args.model, "processes": world, "batch_per_process": args.batch, "seq": args.seq,
                  "precision": run.precision, "zero_stage": cfg.train.deepspeed.zero_stage,
                  "threads_per_process": args.threads, "step_s_median": step, "step_s_all": times,
                  "step_cpu_s_median": cpu_step, "tokens_per_s_per_process": tokens / step,
                  "tokens_per_cpu_s_per_process": tokens / cpu_step, "tokens_per_s_total": world * tokens / step,
                  "flops_per_token": flops_per_token, "params_linear": n_linear,
                  "params_trainable": run.n_trainable}
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(name)
            result.update(device=name, peak_flops=peak,
                          mfu=(tokens / step) * flops_per_token / peak if peak else None,
                          max_memory_gib=torch.cuda.max_memory_allocated() / 2**30)
        args.out.write_text(json.dumps(result))


# ------------------------------------------------------------------------------- driver
def launch(model: str, nproc: int, batch: int, seq: int, steps: int, warmup: int, threads: int,
           extra: list[str] | None = None) -> dict[str, Any]:
    from hammer_core.model.tokenizer import load_tiny_tokenizer

    vocab = len(load_tiny_tokenizer())
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        rows = work / "rows.parquet"
        write_rows(rows, rows=max(64, 4 * nproc * batch), seq=seq, vocab=vocab)
        out = work / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               str(Path(__file__).resolve()), "--worker", "--model", model, "--batch", str(batch), "--seq", str(seq),
               "--steps", str(steps), "--warmup", str(warmup), "--threads", str(threads), "--rows", str(rows),
               "--work", str(work), "--out", str(out), *(extra or [])]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{model} x {nproc} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        result = json.loads(out.read_text())
        result["launch_wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"{model:>13} x {nproc}: {result['tokens_per_s_per_process']:.1f} tokens/s per process, "
              f"{result['tokens_per_cpu_s_per_process']:.1f} per CPU second (step {result['step_s_median']:.3f} s)",
              flush=True)
        return result


def scaling(one: dict[str, Any], two: dict[str, Any]) -> dict[str, float]:
    """2-process over 1-process tokens/s per process: on the wall clock, and per CPU second."""
    return {"wall": two["tokens_per_s_per_process"] / one["tokens_per_s_per_process"],
            "cpu": two["tokens_per_cpu_s_per_process"] / one["tokens_per_cpu_s_per_process"]}


def markdown(info: dict[str, Any], cpu: list[dict[str, Any]], ratios: dict[str, float],
             gpu: dict[str, Any] | None, gpu_note: str) -> str:
    lines = [
        "# Training benchmark",
        "",
        f"Machine: {info['arch']}, {info['nproc']} cores, {info['cpu']}; GPU: {info['gpu'] or 'none'}; "
        f"torch {info['torch']}, DeepSpeed {info['deepspeed']}, Python {info['python']}; {info['date']}.",
        "",
        "Produced by `benchmarks/bench_train.py` on this machine: the real training step "
        "(`hammer_core.train.trainer.Run.step`: DeepSpeed engine, CGC-LoRA, AdamW) in `torchrun` workers; "
        "median of the timed steps after warm-up; every figure below was measured in the same run. "
        "Rows are synthetic fixed-length sequences; weights are random (no download).",
        "",
        "## Tokens/s per process, 1 vs 2 processes (CPU: fp32, gloo; GPU: bf16, NCCL; ZeRO stage 0)",
        "",
        "| model | batch x seq per process | threads per process | processes | step s (wall) | step CPU s | "
        "tokens/s per process | tokens per CPU s per process | tokens/s total |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in cpu:
        lines.append(f"| {r['model']} | {r['batch_per_process']} x {r['seq']} | {r['threads_per_process']} | "
                     f"{r['processes']} | {r['step_s_median']:.3f} | {r['step_cpu_s_median']:.3f} | "
                     f"{r['tokens_per_s_per_process']:.1f} | {r['tokens_per_cpu_s_per_process']:.1f} | "
                     f"{r['tokens_per_s_total']:.1f} |")
    lines += ["", "**Scaling ratio**, 2 processes / 1 process, tokens/s per process (1.0 = data parallelism "
              "costs nothing). *Wall*: what a user sees on this machine, including waiting for a core that "
              "other work holds; *CPU*: per CPU second of the workers, the cost of data parallelism itself "
              f"(load average during the run: {info['load_avg_at_start']} before, {info.get('load_after', '?')} after).",
              "", "| model | wall | CPU |", "|---|---|---|"]
    lines += [f"| {m} | **{v['wall']:.3f}** | **{v['cpu']:.3f}** |" for m, v in ratios.items()]
    lines += ["", "## GPU: bf16 tokens/s and MFU, Qwen2.5-1.5B architecture, sequence 2048", ""]
    if gpu:
        mfu = gpu.get("mfu")
        lines += ["| device | batch x seq | tokens/s | FLOPs/token | peak TFLOP/s | MFU | target | max memory GiB |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {gpu['device']} | {gpu['batch_per_process']} x {gpu['seq']} | "
                  f"{gpu['tokens_per_s_per_process']:.0f} | {gpu['flops_per_token']:.3e} | "
                  f"{(gpu['peak_flops'] or 0) / 1e12:.0f} | {f'{mfu:.1%}' if mfu else 'n/a'} | "
                  f">= {MFU_TARGET:.0%} | {gpu['max_memory_gib']:.1f} |", ""]
    lines += [gpu_note, "", "## Raw figures", "", "```json",
              json.dumps({"machine": info, "cpu": cpu, "scaling_ratio": ratios, "gpu": gpu}, indent=2), "```", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny model only, few steps, write nothing")
    ap.add_argument("--models", default="tiny,qwen2.5-1.5b")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker process")
    ap.add_argument("--peak-tflops", type=float, help="GPU bf16 peak (default: from the device name)")
    # worker mode (started by the driver through torchrun)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--gradient-checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    info = machine_info()
    models = ["tiny"] if args.quick else args.models.split(",")
    cpu, ratios = [], {}
    if not torch.cuda.is_available():
        for model in models:
            batch, seq, steps, warmup = CPU_SETTINGS[model]
            if args.quick:
                steps, warmup = 3, 1
            one = launch(model, 1, batch, seq, steps, warmup, args.threads)
            two = launch(model, 2, batch, seq, steps, warmup, args.threads)
            cpu += [one, two]
            ratios[model] = scaling(one, two)
        gpu, gpu_note = None, (
            "**No GPU was lent to this run**, so the bf16 / MFU figures were not measured here: the section above "
            "is CPU-only. On a machine with CUDA the same command measures them (1 GPU, bf16, NCCL, "
            f"batch {GPU_SETTING[1]} x sequence {GPU_SETTING[2]}) and records the device name.")
    else:
        model, batch, seq, steps, warmup = GPU_SETTING
        extra = ["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []
        gpu = launch(model, 1, batch, seq, steps, warmup, args.threads, extra)
        cpu.append(gpu)
        if torch.cuda.device_count() >= 2:  # data-parallel scaling across two GPUs
            cpu.append(launch(model, 2, batch, seq, steps, warmup, args.threads, extra))
            ratios[model] = scaling(gpu, cpu[-1])
        mfu = gpu.get("mfu")
        gpu_note = (f"Measured on {gpu['device']} by this script ({info['date']}); MFU "
                    f"{'meets' if mfu and mfu >= MFU_TARGET else 'misses'} the {MFU_TARGET:.0%} target."
                    if mfu is not None else f"Measured on {gpu['device']}; unknown peak: pass --peak-tflops.")
    if args.quick:
        print(json.dumps({"cpu": cpu, "scaling_ratio": ratios, "gpu": gpu}, indent=2))
        return
    from hammer_core.artifacts import atomic_write_text

    info["load_after"] = [round(x, 2) for x in os.getloadavg()]
    atomic_write_text(RESULTS, markdown(info, cpu, ratios, gpu, gpu_note))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

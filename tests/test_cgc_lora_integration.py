"""CGC-LoRA in its surroundings: ``transformers.Trainer``, half precision, the ablation baselines
built from the pipeline config, and architectures other than Qwen2 (CPU, random init, no hub).

Math under test (see hammer_core.model.cgc_lora): for a row of task t an adapted layer computes
    h = W0 x + (alpha / r) * sum_{i in common ∪ specific(t)} w_{t,i} B_i A_i x,
the baselines are the special cases with one admissible expert per task (weight 1), and every
variant exports, per task, one standard PEFT LoRA that reproduces the model exactly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file
from torch import nn

from hammer_core.model.cgc_lora import (
    CGCLoraConfig,
    CGCLoraLinear,
    CGCLoraModel,
    export_task_adapter,
    inject_cgc_lora,
    load_cgc_lora,
    merge_task_into_base,
    save_cgc_lora,
    save_merged_task,
)
from hammer_core.config import ConfigError, load_config
from hammer_core.train.trainer import adapter_config
from tests.conftest import DEMO_CONFIG
from tests.test_cgc_lora import TASKS, VOCAB, make_base, max_diff, perturb, random_ids

# PEFT 0.21 reads the deprecated `is_gradient_checkpointing` of transformers 5.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


# ---------------------------------------------------------------------------- Trainer
class TaskIdCollator:
    """A plain collator that emits ``task_ids`` beside the LM inputs and records what it emitted.

    Dataset rows carry their task in a ``task_ids`` column: the Trainer keeps only the columns
    that ``CGCLoraModel.forward`` names (``remove_unused_columns``) before collating.
    """

    def __init__(self) -> None:
        self.emitted: list[list[int]] = []

    def __call__(self, rows: list[dict[str, object]]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([row["input_ids"] for row in rows])
        task_ids = [int(row["task_ids"]) for row in rows]
        self.emitted.append(task_ids)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(),
                "task_ids": torch.tensor(task_ids)}


def _trainer_args(tmp_path: Path, checkpointing: bool) -> transformers.TrainingArguments:
    fields = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    ckpt_flag = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        **{ckpt_flag: checkpointing},
        # remove_unused_columns stays at its default (True): task_ids must survive it.
    )


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_trainer_routes_task_ids_to_the_layers(tmp_path: Path, checkpointing: bool) -> None:
    model = inject_cgc_lora(make_base(), CGCLoraConfig(tasks=TASKS, n_common=1, n_specific=1))
    gen = torch.Generator().manual_seed(0)
    # Tasks 0 and 1 only: task 2's own expert and gate embedding must never move.
    rows = [{"input_ids": torch.randint(0, VOCAB, (12,), generator=gen).tolist(), "task_ids": i % 2}
            for i in range(12)]
    layer = model.cgc_layers()["model.layers.1.mlp.down_proj"]
    seen: list[list[int]] = []
    hook = layer.register_forward_pre_hook(
        lambda module, args: seen.append(module._context.for_batch(args[0].shape[0]).tolist()))
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    collator = TaskIdCollator()
    trainer = transformers.Trainer(model=model, args=_trainer_args(tmp_path, checkpointing),
                                   train_dataset=rows, data_collator=collator)
    result = trainer.train()
    hook.remove()

    assert result.global_step == 3 and len(collator.emitted) == 3
    if checkpointing:  # every decoder block is re-run in backward, with the same task ids
        assert any(getattr(m, "gradient_checkpointing", False) for m in model.base_model.modules())
        assert len(seen) == 2 * len(collator.emitted)
        assert sorted(seen) == sorted(collator.emitted * 2)
    else:
        assert seen == collator.emitted  # the layer saw exactly the collator's per-row task ids
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))

    r = model.config.r_expert
    experts = {t: slice((1 + t) * r, (2 + t) * r) for t in range(3)}  # expert 0 is the common one
    a = layer.lora_A.detach()
    a_before = before["base_model.model.layers.1.mlp.down_proj.lora_A"]
    assert max_diff(a[experts[2]], a_before[experts[2]]) == 0.0  # unused task: untouched
    assert max_diff(a[experts[0]], a_before[experts[0]]) > 0.0
    assert max_diff(a[experts[1]], a_before[experts[1]]) > 0.0
    emb = model.cgc_gate.task_embedding.weight.detach()
    emb_before = before["cgc_gate.task_embedding.weight"]
    assert max_diff(emb[2], emb_before[2]) == 0.0 and max_diff(emb[0], emb_before[0]) > 0.0

    # The Trainer-trained adapter saves and reloads into a fresh base with identical outputs.
    save_cgc_lora(model, tmp_path / "adapter")
    reloaded = load_cgc_lora(make_base(), tmp_path / "adapter").eval()
    ids = random_ids(3)
    with torch.no_grad():
        assert max_diff(model.eval()(input_ids=ids, task_ids=[0, 1, 2]).logits,
                        reloaded(input_ids=ids, task_ids=[0, 1, 2]).logits) == 0.0


# ---------------------------------------------------------------------- half precision
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("adapter_dtype", [None, torch.float32], ids=["adapter-same", "adapter-fp32"])
def test_half_precision_trains_with_gradient_checkpointing(
    dtype: torch.dtype, adapter_dtype: torch.dtype | None
) -> None:
    ids = random_ids(3, 12, seed=11)
    task_ids = [2, 0, 1]

    def run(checkpointing: bool, model_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, CGCLoraModel]:
        model = inject_cgc_lora(make_base().to(model_dtype), CGCLoraConfig(tasks=TASKS, n_common=2, n_specific=1),
                                adapter_dtype=adapter_dtype)
        perturb(model)
        if checkpointing:
            model.gradient_checkpointing_enable({"use_reentrant": False})
        model.train()
        out = model(input_ids=ids, labels=ids, task_ids=task_ids)
        out.loss.backward()
        return out.logits.detach(), out.loss.detach(), model

    logits, loss, model = run(True, dtype)
    expected_adapter = adapter_dtype or dtype
    layer = model.cgc_layers()["model.layers.0.self_attn.q_proj"]
    assert logits.dtype == dtype and layer.lora_A.dtype == expected_adapter
    assert torch.isfinite(loss)
    for name, param in [("lora_A", layer.lora_A), ("lora_B", layer.lora_B),
                        ("gate", model.cgc_gate.proj.weight)]:
        assert param.grad is not None and param.grad.dtype == param.dtype, name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name

    # Checkpointing recomputes exactly: same loss and grads as without it, in the same dtype.
    plain_logits, plain_loss, plain = run(False, dtype)
    assert torch.equal(loss, plain_loss)
    torch.testing.assert_close(layer.lora_B.grad, plain.cgc_layers()["model.layers.0.self_attn.q_proj"].lora_B.grad)
    # And half precision tracks the fp32 model.
    ref_logits, _, _ = run(False, torch.float32)
    assert max_diff(logits, ref_logits) < 0.1


# ------------------------------------------------------------------ ablation baselines
def _variant_model(variant: str) -> CGCLoraModel:
    cfg = load_config(DEMO_CONFIG, overrides=[f"adapter.variant={variant}"])
    config = adapter_config(cfg, TASKS)
    assert config.variant == variant
    return inject_cgc_lora(make_base(), config)


def _train_steps(model: CGCLoraModel, steps: int, task_ids: list[int]) -> None:
    ids = random_ids(len(task_ids), 12, seed=5)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids, task_ids=task_ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def test_variant_configs_from_the_pipeline_config() -> None:
    demo = load_config(DEMO_CONFIG).adapter  # n_common=2, n_specific=1, r_expert=4
    rank = (demo.n_common + demo.n_specific) * demo.r_expert
    shapes = {}
    for variant in ("cgc", "multitask_lora", "per_task_lora"):
        config = adapter_config(load_config(DEMO_CONFIG, overrides=[f"adapter.variant={variant}"]), TASKS)
        shapes[variant] = (config.n_common, config.n_specific, config.r_expert, config.n_experts)
        assert config.export_rank == rank  # same served adapter size for all three
        assert config.alpha == demo.alpha and config.target_modules == demo.target_modules
        assert CGCLoraConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert shapes == {"cgc": (2, 1, 4, 2 + 3), "multitask_lora": (1, 0, rank, 1),
                      "per_task_lora": (0, 1, rank, 3)}
    # A baseline's scaling alpha / R equals CGC's at init (uniform gate over K experts).
    cgc = CGCLoraConfig.for_variant("cgc", tasks=TASKS, n_common=2, n_specific=1, r_expert=4)
    lora = CGCLoraConfig.for_variant("multitask_lora", tasks=TASKS, n_common=2, n_specific=1, r_expert=4)
    assert lora.scaling == pytest.approx(cgc.scaling / (cgc.n_common + cgc.n_specific))

    with pytest.raises(ConfigError, match="variant"):
        load_config(DEMO_CONFIG, overrides=["adapter.variant=moe_lora"])
    with pytest.raises(ValueError, match="variant"):
        CGCLoraConfig.for_variant("moe_lora", tasks=TASKS)
    with pytest.raises(ValueError, match="n_common=1, n_specific=0"):
        CGCLoraConfig(tasks=TASKS, n_common=2, n_specific=1, variant="multitask_lora")
    # Checkpoints saved before variants existed load as CGC-LoRA.
    legacy = {k: v for k, v in cgc.to_dict().items() if k != "variant"}
    assert CGCLoraConfig.from_dict(legacy).variant == "cgc"


@pytest.mark.parametrize("variant", ["cgc", "multitask_lora", "per_task_lora"])
def test_variant_trains_and_exports_loadable_peft_adapters(tmp_path: Path, variant: str) -> None:
    from peft import PeftModel

    model = _variant_model(variant)
    if variant != "cgc":  # one admissible expert per task: the gate is the constant 1, frozen
        assert all(not p.requires_grad for p in model.cgc_gate.parameters())
        assert torch.equal(model.cgc_gate().sum(-1), torch.ones(3))
    linears = [(m.in_features, m.out_features) for m in model.cgc_layers().values()]
    gate_trainable = sum(p.numel() for p in model.cgc_gate.parameters() if p.requires_grad)
    assert model.num_trainable() == model.config.n_experts * model.config.r_expert * sum(
        i + o for i, o in linears) + gate_trainable
    _train_steps(model, 3, task_ids=[0, 1, 0, 1])  # task 2 never appears in training

    ids = random_ids(2, 10, seed=3)
    exported: dict[str, dict[str, torch.Tensor]] = {}
    for task in TASKS:
        out = export_task_adapter(model, task, tmp_path / task, base_model_name_or_path="tiny-qwen2")
        adapter_cfg = json.loads((out / "adapter_config.json").read_text())
        assert adapter_cfg["r"] == model.config.export_rank == 12
        exported[task] = load_file(str(out / "adapter_model.safetensors"))
        peft_model = PeftModel.from_pretrained(make_base(), str(out)).eval()
        with torch.no_grad():
            expected = model(input_ids=ids, task_ids=task).logits
            assert max_diff(expected, peft_model(input_ids=ids).logits) < 1e-4

    def b_norm(task: str) -> float:
        return sum(t.abs().sum().item() for k, t in exported[task].items() if "lora_B" in k)

    def same(t1: str, t2: str) -> bool:
        return all(torch.equal(exported[t1][k], exported[t2][k]) for k in exported[t1])

    assert b_norm("single") > 0 and b_norm("parallel") > 0
    if variant == "multitask_lora":  # one LoRA for every task: N identical adapters
        assert same("single", "parallel") and same("single", "irrelevance")
    elif variant == "per_task_lora":  # independent LoRAs: the unseen task's adapter is still a no-op
        assert not same("single", "parallel")
        assert b_norm("irrelevance") == 0.0
    else:  # CGC: the unseen task still gets the trained common experts
        assert not same("single", "parallel")
        assert b_norm("irrelevance") > 0


# ----------------------------------------------------------------- other architectures
def tiny_llama() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_gpt2() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize(
    ("make", "targets", "expected"),
    [
        # Llama, regex targets: attention q/v and the MLP down projection of every layer.
        (tiny_llama, r"model\.layers\.\d+\.(self_attn\.(q|v)_proj|mlp\.down_proj)", 2 * 3),
        # GPT-2 stores its projections as transformers Conv1D ([in, out] weights): all of them.
        (tiny_gpt2, "all-linear", 2 * 4),
    ],
    ids=["llama-regex", "gpt2-conv1d"],
)
def test_other_architectures_export_exactly(
    tmp_path: Path, make: Callable[[], nn.Module], targets: str, expected: int
) -> None:
    from peft import PeftModel

    model = inject_cgc_lora(make(), CGCLoraConfig(tasks=TASKS[:2], n_common=1, n_specific=1, target_modules=targets))
    assert len(model.cgc_layers()) == expected
    perturb(model)
    model.eval()
    ids = random_ids(2, 10, seed=3)
    prompt = random_ids(2, 6, seed=4)
    generate = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        base_logits = make()(input_ids=ids).logits
        mixed = model(input_ids=ids, task_ids=[1, 0]).logits
    for t, task in enumerate(TASKS[:2]):
        out = export_task_adapter(model, task, tmp_path / task, base_model_name_or_path="tiny")
        peft_model = PeftModel.from_pretrained(make(), str(out)).eval()
        merged = merge_task_into_base(model, task).eval()
        assert not any(isinstance(m, CGCLoraLinear) for m in merged.modules())
        with torch.no_grad():
            logits = model(input_ids=ids, task_ids=task).logits
            assert max_diff(logits, base_logits) > 1e-3
            assert max_diff(logits, peft_model(input_ids=ids).logits) < 1e-4
            assert max_diff(logits, merged(input_ids=ids).logits) < 1e-4
            assert max_diff(mixed[1 - t], logits[1 - t]) < 1e-5  # mixed-task rows match
        tokens = model.generate(prompt, task_ids=task, **generate)
        assert torch.equal(tokens, peft_model.generate(input_ids=prompt, **generate))
        assert torch.equal(tokens, merged.generate(prompt, **generate))

        # Dense export: a plain HF model folder (written twice: the second replaces the first).
        merged_dir = save_merged_task(model, task, tmp_path / "merged")
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
        with torch.no_grad():
            assert max_diff(logits, reloaded(input_ids=ids).logits) < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["merged", *TASKS[:2]])  # no temp folders


# ------------------------------------------------------------------ export folder names
def _train_folder(path: Path, tasks: list[str]) -> Path:
    """A train stage output folder (what hammer export reads), without training."""
    import shutil

    from hammer_core.paths import TINY_TOKENIZER_DIR

    base = make_base()
    base.save_pretrained(path / "base_model", safe_serialization=True)
    save_cgc_lora(inject_cgc_lora(base, CGCLoraConfig(tasks=tasks, n_common=1, n_specific=1)), path / "adapter")
    shutil.copytree(TINY_TOKENIZER_DIR, path / "tokenizer")
    (path / "train_summary.json").write_text(json.dumps({"base_model": str(path / "base_model")}))
    return path


def test_export_refuses_task_labels_that_share_an_adapter_folder(tmp_path: Path) -> None:
    from hammer_core.model.export import export_adapters

    train = _train_folder(tmp_path / "clash", ["trip/eu", "trip eu"])
    with pytest.raises(ConfigError, match=r"'trip/eu' and 'trip eu' both become the folder name 'trip_eu'"):
        export_adapters(train, tmp_path / "export")
    assert not (tmp_path / "export").exists()  # refused before writing anything

    train = _train_folder(tmp_path / "distinct", ["trip/eu", "trip.eu"])
    manifest = export_adapters(train, tmp_path / "export").manifest
    assert manifest["adapters"] == {"trip/eu": "adapters/trip_eu", "trip.eu": "adapters/trip.eu"}
    assert sorted(p.name for p in (tmp_path / "export" / "adapters").iterdir()) == ["trip.eu", "trip_eu"]

"""Tests of CGC-LoRA (hammer_core.model.cgc_lora) on a tiny random-init Qwen2 model (CPU, no hub access).

Math under test: for a row of task t an adapted linear computes
    h = W0 x + (alpha / r) * sum_{i in common ∪ specific(t)} w_{t,i} B_i A_i x,
    w_t = softmax over the admissible experts of G(embed(t)),
and the "1 + N" export collapses task t into one standard PEFT LoRA (or a merged base) that
must reproduce the CGC model exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from torch import nn

from hammer_core.model.cgc_lora import (
    CGCGate,
    CGCLoraConfig,
    CGCLoraLinear,
    CGCLoraModel,
    export_task_adapter,
    inject_cgc_lora,
    load_cgc_lora,
    merge_task_into_base,
    save_cgc_lora,
    task_lora_weights,
)

# PEFT 0.21 reads the deprecated `is_gradient_checkpointing` of transformers 5.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

TASKS = ["single", "parallel", "irrelevance"]
ATTN_MLP = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
VOCAB = 256


def make_base() -> transformers.Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    return transformers.Qwen2ForCausalLM(cfg).float().eval()


@pytest.fixture
def base() -> transformers.Qwen2ForCausalLM:
    return make_base()


def perturb(model: CGCLoraModel, seed: int = 1) -> None:
    """B is zero at init: add seeded noise to every adapter parameter so deltas are non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.trainable_parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)


def make_cgc(config: CGCLoraConfig | None = None, *, seed: int = 1) -> CGCLoraModel:
    model = inject_cgc_lora(make_base(), config or CGCLoraConfig(tasks=TASKS, n_common=2, n_specific=2))
    perturb(model, seed)
    return model.eval()


def random_ids(batch: int = 2, length: int = 12, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# ----------------------------------------------------------------------------- config
def test_config_round_trip_and_validation() -> None:
    cfg = CGCLoraConfig(tasks=TASKS, n_common=3, n_specific=2, r_expert=8, target_modules=["q_proj", "v_proj"])
    assert cfg.n_experts == 3 + 3 * 2
    assert cfg.export_rank == (3 + 2) * 8
    assert cfg.admissible_experts("parallel") == [0, 1, 2, 5, 6]
    again = CGCLoraConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg

    bad = [
        dict(tasks=[]),
        dict(tasks=["a", "a"]),
        dict(tasks=["a", ""]),
        dict(tasks=["a"], r_expert=0),
        dict(tasks=["a"], n_common=-1),
        dict(tasks=["a"], n_common=0, n_specific=0),
        dict(tasks=["a"], gate_dim=0),
        dict(tasks=["a"], alpha=0.0),
        dict(tasks=["a"], dropout=1.0),
        dict(tasks=["a"], target_modules=[]),
        dict(tasks=["a"], target_modules="(unclosed"),
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            CGCLoraConfig(**kwargs)
    with pytest.raises(ValueError, match="unknown CGCLoraConfig keys"):
        CGCLoraConfig.from_dict({"tasks": ["a"], "rank": 4})
    with pytest.raises(ValueError, match="unknown task"):
        cfg.task_index("nope")


# -------------------------------------------------------------------------- 1 injection
@pytest.mark.parametrize("shared_gate", [True, False])
def test_injection_targets_freezing_and_param_count(base: nn.Module, shared_gate: bool) -> None:
    linears = {n: (m.in_features, m.out_features) for n, m in base.named_modules() if isinstance(m, nn.Linear)}
    cfg = CGCLoraConfig(tasks=TASKS, n_common=2, n_specific=1, r_expert=4, gate_dim=16, shared_gate=shared_gate)
    model = inject_cgc_lora(base, cfg)

    layers = model.cgc_layers()
    expected = {n for n in linears if n.rsplit(".", 1)[-1] in ATTN_MLP}
    assert set(layers) == expected and len(expected) == 2 * 7
    assert isinstance(model.base_model.lm_head, nn.Linear) and not isinstance(model.base_model.lm_head, CGCLoraLinear)
    assert all(isinstance(layer.base_layer, nn.Linear) for layer in layers.values())

    for name, param in model.named_parameters():
        is_adapter = name.endswith((".lora_A", ".lora_B")) or "gate." in name.replace("cgc_gate.", "gate.")
        assert param.requires_grad == is_adapter, name
    assert not any(p.requires_grad for n, p in model.base_model.named_parameters() if "lora_" not in n and ".gate." not in n)

    E, r = cfg.n_experts, cfg.r_expert
    gate_params = cfg.n_tasks * cfg.gate_dim + cfg.gate_dim * E + E
    lora_params = sum(E * r * (i + o) for n, (i, o) in linears.items() if n in expected)
    n_gates = 1 if shared_gate else len(expected)
    assert model.num_trainable() == lora_params + n_gates * gate_params

    state = model.adapter_state_dict()
    assert sum(t.numel() for t in state.values()) == model.num_trainable()
    layer = layers["model.layers.0.self_attn.q_proj"]
    assert layer.lora_A.shape == (E * r, 64) and layer.lora_B.shape == (64, E * r)
    assert torch.count_nonzero(layer.lora_B) == 0
    if shared_gate:
        # Registered once: no duplicate of the shared gate under every layer.
        assert sum(k.startswith("cgc_gate.") for k in state) == 3
        assert not any(".gate." in k for k in model.base_model.state_dict())
        assert len({id(l.get_gate()) for l in layers.values()}) == 1
    else:
        assert sum(".gate." in k for k in state) == 3 * len(expected)


def test_target_modules_suffix_regex_and_no_match(base: nn.Module) -> None:
    model = inject_cgc_lora(make_base(), CGCLoraConfig(tasks=TASKS, target_modules=["q_proj", "v_proj"]))
    assert {n.rsplit(".", 1)[-1] for n in model.cgc_layers()} == {"q_proj", "v_proj"}
    model = inject_cgc_lora(make_base(), CGCLoraConfig(tasks=TASKS, target_modules=r"model\.layers\.0\..*_proj"))
    assert len(model.cgc_layers()) == 7 and all(n.startswith("model.layers.0.") for n in model.cgc_layers())
    with pytest.raises(ValueError, match="q_proj"):  # the message lists the available Linear names
        inject_cgc_lora(base, CGCLoraConfig(tasks=TASKS, target_modules=["nonexistent"]))
    with pytest.raises(ValueError, match="already contains"):
        inject_cgc_lora(model.base_model, CGCLoraConfig(tasks=TASKS))


# ------------------------------------------------------------------------------- 2 gate
def test_gate_weights_and_task_dependence() -> None:
    cfg = CGCLoraConfig(tasks=TASKS, n_common=2, n_specific=2)
    model = make_cgc(cfg)
    weights = model.cgc_gate()
    assert weights.shape == (3, cfg.n_experts)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    for t in range(3):
        admissible = cfg.admissible_experts(t)
        assert admissible == [0, 1, 2 + 2 * t, 3 + 2 * t]
        others = [i for i in range(cfg.n_experts) if i not in admissible]
        assert torch.all(weights[t, others] == 0.0)
        assert torch.all(weights[t, admissible] > 0)
    assert not torch.allclose(weights[0, :2], weights[1, :2])  # task-specific mixing of commons

    # Fresh gate: zero projection -> uniform over the admissible experts.
    fresh = CGCGate(cfg)()
    torch.testing.assert_close(fresh[1], torch.tensor([0.25, 0.25, 0, 0, 0.25, 0.25, 0, 0]))

    ids = random_ids(1)
    with torch.no_grad():
        logits = [model(input_ids=ids, task_ids=[t]).logits for t in range(3)]
    assert max_diff(logits[0], logits[1]) > 1e-3
    assert max_diff(logits[1], logits[2]) > 1e-3


def test_gate_runs_once_per_forward_and_generate() -> None:
    """The per-row gate weights are computed once per pass and shared by every layer."""
    ids = random_ids(2)
    for shared_gate in (True, False):
        model = make_cgc(CGCLoraConfig(tasks=TASKS, shared_gate=shared_gate))
        calls: list[int] = []
        for gate in model.gates().values():
            gate.register_forward_hook(lambda module, args, out: calls.append(id(module)))
        n_gates = len(model.gates())
        assert n_gates == (1 if shared_gate else len(model.cgc_layers()))
        model(input_ids=ids, task_ids=[0, 2]).logits.sum().backward()
        assert len(calls) == n_gates and len(set(calls)) == n_gates  # each gate once, not once per layer
        model.generate(ids, task_ids=[0, 2], max_new_tokens=3, do_sample=False, pad_token_id=0)
        assert len(calls) == 2 * n_gates  # once for all the decoding steps of one generate call
        model(input_ids=ids, task_ids=[1, 1])
        assert len(calls) == 3 * n_gates  # a new pass recomputes (parameters may have changed)


# ------------------------------------------------------------------------- 3 mixed batch
@pytest.mark.parametrize("shared_gate", [True, False])
def test_mixed_task_batch_matches_single_task_rows(shared_gate: bool) -> None:
    model = make_cgc(CGCLoraConfig(tasks=TASKS, n_common=2, n_specific=1, shared_gate=shared_gate))
    ids = random_ids(4)
    task_ids = torch.tensor([0, 1, 1, 2])
    with torch.no_grad():
        mixed = model(input_ids=ids, task_ids=task_ids).logits
        for row, t in enumerate(task_ids.tolist()):
            single = model(input_ids=ids[row : row + 1], task_ids=[t]).logits
            assert max_diff(mixed[row], single[0]) < 1e-5
        # Task names work too, and one task broadcasts to every row.
        by_name = model(input_ids=ids, task_ids=["single", "parallel", "parallel", "irrelevance"]).logits
        broadcast = model(input_ids=ids, task_ids="parallel").logits
        per_row = model(input_ids=ids, task_ids=[1, 1, 1, 1]).logits
    assert max_diff(by_name, mixed) == 0.0
    assert max_diff(broadcast, per_row) < 1e-6


# ------------------------------------------------------------------------------ 4 export
def _greedy(model: nn.Module, ids: torch.Tensor, **kwargs: object) -> torch.Tensor:
    return model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, pad_token_id=0, **kwargs
    )


@pytest.mark.parametrize(
    "config",
    [
        CGCLoraConfig(tasks=TASKS, n_common=2, n_specific=2),
        # Partial targeting: PEFT leaf names would over-match, so the export uses an exact regex.
        CGCLoraConfig(tasks=TASKS[:2], n_common=1, n_specific=1, shared_gate=False,
                      target_modules=r"model\.layers\.1\.(self_attn\.q_proj|mlp\.down_proj)"),
    ],
    ids=["all-linear", "partial-regex"],
)
def test_export_matches_peft_and_merged(tmp_path: Path, config: CGCLoraConfig) -> None:
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    model = make_cgc(config)
    ids = random_ids(2, 10, seed=3)
    prompt = random_ids(2, 6, seed=4)
    for task in config.tasks:
        out_dir = tmp_path / task
        export_task_adapter(model, task, out_dir, base_model_name_or_path="tiny-qwen2")
        assert {p.name for p in out_dir.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
        adapter_cfg = json.loads((out_dir / "adapter_config.json").read_text())
        assert adapter_cfg["r"] == adapter_cfg["lora_alpha"] == config.export_rank
        assert adapter_cfg["base_model_name_or_path"] == "tiny-qwen2"

        peft_model = PeftModel.from_pretrained(make_base(), str(out_dir)).eval()
        # PEFT adapts exactly the CGC modules (no over-matching by leaf name).
        peft_targets = {n.removeprefix("base_model.model.") for n, m in peft_model.named_modules()
                        if isinstance(m, LoraLayer)}
        assert peft_targets == set(model.cgc_layers())
        merged = merge_task_into_base(model, task).eval()
        assert not any(isinstance(m, CGCLoraLinear) for m in merged.modules())
        assert not any("lora" in n or "gate." in n for n, _ in merged.named_parameters())

        with torch.no_grad():
            cgc_logits = model(input_ids=ids, task_ids=task).logits
            peft_logits = peft_model(input_ids=ids).logits
            merged_logits = merged(input_ids=ids).logits
            base_logits = make_base()(input_ids=ids).logits
        assert max_diff(cgc_logits, base_logits) > 1e-3  # the adapter really changes the model
        assert max_diff(cgc_logits, peft_logits) < 1e-4
        assert max_diff(cgc_logits, merged_logits) < 1e-4

        cgc_tokens = _greedy(model, prompt, task_ids=task)
        assert torch.equal(cgc_tokens, _greedy(peft_model, prompt))
        assert torch.equal(cgc_tokens, _greedy(merged, prompt))
    # Exporting did not change the CGC model's base weights.
    assert max_diff(model.base_model.lm_head.weight, make_base().lm_head.weight) == 0.0


def test_task_lora_weights_reproduce_gated_delta() -> None:
    cfg = CGCLoraConfig(tasks=TASKS, n_common=2, n_specific=2, r_expert=3)
    model = make_cgc(cfg)
    path = "model.layers.0.mlp.up_proj"
    layer = model.cgc_layers()[path]
    x = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(5))
    for t in range(cfg.n_tasks):
        a_t, b_t = task_lora_weights(model, t)[path]
        assert a_t.shape == (cfg.export_rank, 64) and b_t.shape == (128, cfg.export_rank)
        with torch.no_grad(), model.task_context.use(torch.tensor([t])):
            gated = layer(x) - layer.base_layer(x)
        assert max_diff(gated, x @ (b_t @ a_t).T) < 1e-5


# -------------------------------------------------------------------------- 5 save/load
def test_save_load_round_trip_and_mismatch(tmp_path: Path) -> None:
    cfg = CGCLoraConfig(tasks=TASKS, n_common=2, n_specific=1, shared_gate=False)
    model = make_cgc(cfg)
    save_cgc_lora(model, tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert files == {"cgc_lora_config.json", "cgc_lora.safetensors"}  # no temp files left behind

    loaded = load_cgc_lora(make_base(), tmp_path / "ckpt").eval()
    assert loaded.config == cfg
    ids = random_ids(3)
    with torch.no_grad():
        expected = model(input_ids=ids, task_ids=[0, 1, 2]).logits
        got = loaded(input_ids=ids, task_ids=[0, 1, 2]).logits
    assert max_diff(expected, got) == 0.0
    assert loaded.adapter_state_dict().keys() == model.adapter_state_dict().keys()

    # A config passed by the caller must match the saved one.
    with pytest.raises(ValueError, match="does not match"):
        load_cgc_lora(make_base(), tmp_path / "ckpt", CGCLoraConfig(tasks=TASKS + ["extra"], shared_gate=False))

    # A tampered config on disk: shapes (r_expert) or keys (shared_gate) no longer match.
    for change in ({"r_expert": 8}, {"shared_gate": True}, {"tasks": TASKS[:2]}):
        bad_dir = tmp_path / f"bad-{next(iter(change))}"
        save_cgc_lora(model, bad_dir)
        data = json.loads((bad_dir / "cgc_lora_config.json").read_text())
        data.update(change)
        (bad_dir / "cgc_lora_config.json").write_text(json.dumps(data))
        fresh = make_base()
        with pytest.raises(ValueError):
            load_cgc_lora(fresh, bad_dir)
        # A failed load leaves the base model as it was.
        assert not any(isinstance(m, CGCLoraLinear) for m in fresh.modules())
        assert all(p.requires_grad for p in fresh.parameters())


# ----------------------------------------------------------------------------- 6 training
def _train(model: CGCLoraModel, steps: int, ids: torch.Tensor, task_ids: list[int]) -> list[float]:
    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = model(input_ids=ids, labels=ids, task_ids=task_ids).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_training_reduces_loss_and_only_updates_adapter() -> None:
    model = inject_cgc_lora(make_base(), CGCLoraConfig(tasks=TASKS, n_common=2, n_specific=1))
    base_before = {k: v.clone() for k, v in make_base().state_dict().items()}
    ids = random_ids(4, 16, seed=7)
    losses = _train(model, 30, ids, [0, 1, 2, 0])
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5, losses

    layer = model.cgc_layers()["model.layers.0.self_attn.q_proj"]
    for name, param in [
        ("lora_A", layer.lora_A),
        ("lora_B", layer.lora_B),
        ("gate.task_embedding", model.cgc_gate.task_embedding.weight),
        ("gate.proj", model.cgc_gate.proj.weight),
    ]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name

    # Base weights unchanged (PEFT-style names: <path>.base_layer.weight).
    for key, value in model.base_model.state_dict().items():
        original = key.replace(".base_layer.", ".")
        if original in base_before:
            assert torch.equal(value, base_before[original]), key
    assert all(p.grad is None for n, p in model.base_model.named_parameters() if not p.requires_grad)


def test_bf16_base_with_fp32_adapter() -> None:
    base = make_base().to(torch.bfloat16)
    model = inject_cgc_lora(base, CGCLoraConfig(tasks=TASKS))
    perturb(model)
    layer = model.cgc_layers()["model.layers.0.mlp.down_proj"]
    assert layer.lora_A.dtype == torch.float32 and layer.base_layer.weight.dtype == torch.bfloat16
    ids = random_ids(2)
    out = model(input_ids=ids, labels=ids, task_ids=[0, 2])
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()
    assert layer.lora_B.grad is not None and layer.lora_B.grad.dtype == torch.float32


# -------------------------------------------------------------------------- 7 generate
def test_generate_with_mixed_tasks_and_missing_task_ids() -> None:
    model = make_cgc()
    prompt = random_ids(2, 5, seed=9)
    out = model.generate(prompt, task_ids=[0, 2], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 9)
    for row, task in enumerate(["single", "irrelevance"]):
        single = model.generate(prompt[row : row + 1], task_ids=[task], max_new_tokens=4, do_sample=False,
                                pad_token_id=0)
        assert torch.equal(out[row], single[0])
    # Beam search expands every row in place: task ids are repeat-interleaved per layer.
    beam_kwargs = dict(max_new_tokens=4, num_beams=2, do_sample=False, pad_token_id=0)
    beams = model.generate(prompt, task_ids=["single", "irrelevance"], **beam_kwargs)
    assert beams.shape == (2, 9)
    for row, task in enumerate(["single", "irrelevance"]):
        single = model.generate(prompt[row : row + 1], task_ids=task, **beam_kwargs)
        assert torch.equal(beams[row], single[0])

    with pytest.raises(RuntimeError, match="task_ids"):
        model(input_ids=prompt)
    with pytest.raises(RuntimeError, match="task_ids"):
        model.generate(prompt, max_new_tokens=2)
    with pytest.raises(RuntimeError, match="task_ids"):
        model.base_model(input_ids=prompt)  # bypassing the wrapper: the layers complain
    with pytest.raises(RuntimeError, match="multiple"):
        model(input_ids=random_ids(3), task_ids=[0, 1])
    with pytest.raises(ValueError, match="unknown task"):
        model(input_ids=prompt, task_ids=["single", "nope"])
    with pytest.raises(ValueError, match="out of range"):
        model(input_ids=prompt, task_ids=torch.tensor([0, 3]))
    assert model.task_context.task_ids is None  # cleared after every call, even on error


# -------------------------------------------------------------------- 8 checkpointing
@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_trains_with_identical_grads(use_reentrant: bool) -> None:
    ids = random_ids(3, 12, seed=11)
    task_ids = [2, 0, 1]

    def grads(checkpointing: bool) -> tuple[float, dict[str, torch.Tensor]]:
        model = make_cgc(CGCLoraConfig(tasks=TASKS, n_common=2, n_specific=1))
        if checkpointing:
            base = model.base_model
            enable = getattr(base, "activation_checkpointing_enable", None)
            kwargs = {"use_reentrant": use_reentrant}
            if enable is not None:  # transformers >= 5 deprecates gradient_checkpointing_enable
                enable(activation_checkpointing_kwargs=kwargs)
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.train()
        loss = model(input_ids=ids, labels=ids, task_ids=task_ids).loss
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain_loss, plain_grads = grads(False)
    ckpt_loss, ckpt_grads = grads(True)
    assert torch.isfinite(torch.tensor(ckpt_loss))
    assert abs(plain_loss - ckpt_loss) < 1e-5
    assert plain_grads.keys() == ckpt_grads.keys()
    for name, grad in ckpt_grads.items():
        assert grad.abs().sum() > 0, name
        # The recomputation in backward must see the same per-row task ids as the forward.
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)

    # And a few optimizer steps still reduce the loss under checkpointing.
    model = make_cgc(CGCLoraConfig(tasks=TASKS))
    model.gradient_checkpointing_enable({"use_reentrant": use_reentrant})
    losses = _train(model, 5, ids, task_ids)
    assert losses[-1] < losses[0]

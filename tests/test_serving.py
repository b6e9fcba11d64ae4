"""The registered pyfunc as users meet it: ``models:/hammer-fc@champion`` loaded in Python and
behind ``mlflow models serve`` (OpenAI chat-completions in and out, checked with the ``openai``
package's own types; the records form; the serving limits), and its artifacts (N standard PEFT
adapters + a base-model reference) downloaded and loaded with plain peft. All on the session's
pipeline run (sqlite store, where its one version is the champion)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hammer_core.evaluation.parsing import parse_calls
from hammer_core.mlflow_store import use_tracking_uri
from hammer_core.registry.serving import Answer, chat_completion

from .conftest import free_port, loopback_server

pytestmark = pytest.mark.slow

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
TOOLS = [{"name": "get_weather", "description": "Current weather for a city.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
OPENAI_TOOLS = [{"type": "function", "function": TOOLS[0]}]
FX_TOOL = {"type": "function", "function": {
    "name": "convert_currency", "description": "Convert an amount between currencies.",
    "parameters": {"type": "object", "properties": {"amount": {"type": "number"}, "to": {"type": "string"}},
                   "required": ["amount", "to"]}}}
ASK = {"messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": OPENAI_TOOLS}


@pytest.fixture(scope="module")
def registered(pipeline_run):
    reg = pipeline_run[0]["registry"]
    assert reg["champion_version"] == reg["version"]  # the store's first version: champion at once
    return reg


@pytest.fixture(scope="module")
def champion(registered):
    import mlflow

    with use_tracking_uri(registered["tracking_uri"]):
        return mlflow.pyfunc.load_model("models:/hammer-fc@champion")


def _well_formed(out: list, tasks: list[str]) -> None:
    for o in out:
        assert set(o) == {"calls", "raw", "task"} and isinstance(o["raw"], str) and o["task"] in tasks
        assert isinstance(o["calls"], list)
        for call in o["calls"]:
            assert set(call) == {"name", "arguments"} and isinstance(call["arguments"], dict)


def test_predict_takes_records_as_a_dataframe_or_a_list(champion):
    import pandas as pd

    tasks = champion.unwrap_python_model().manifest["tasks"]
    rows = [{"query": "Weather in Oslo?", "tools": TOOLS, "task": "travel"},
            {"messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": json.dumps(OPENAI_TOOLS)},
            {"query": "Tell me a joke.", "tools": []}]
    out = champion.predict(pd.DataFrame(rows))  # missing cells are NaN: the task defaults, query/messages pick
    assert len(out) == 3
    _well_formed(out, tasks)
    assert [o["task"] for o in out] == ["travel", tasks[0], tasks[0]]
    # the same requests as records give the same (greedy) answers, one by one too
    assert champion.predict(rows) == out
    assert champion.predict(rows[:1]) == out[:1]
    with pytest.raises(ValueError, match=r"unsupported fields \['query', 'task'\].*the records form"):
        champion.predict(rows[0])  # one dict is a chat request
    # a query and the same text as messages, JSON-string tools and a list: one prompt, one answer
    assert out[1]["raw"] == champion.predict([{"query": "Weather in Oslo?", "tools": TOOLS}])[0]["raw"]


def test_bad_requests_name_the_row_and_the_reason(champion):
    ok = {"query": "Weather in Oslo?", "tools": TOOLS}
    with pytest.raises(ValueError, match=r"request 1: unknown task 'nope'; this model has \["):
        champion.predict([ok, {**ok, "task": "nope"}])
    with pytest.raises(ValueError, match=r"request 0: needs 'messages' .* or 'query'"):
        champion.predict([{"tools": TOOLS}])
    with pytest.raises(ValueError, match=r"request 0: bad tool: tool #0 has no string name"):
        champion.predict([{"query": "x", "tools": [{"description": "no name"}]}])
    with pytest.raises(ValueError, match=r"request 0: 'tools' is a string but not JSON"):
        champion.predict([{"query": "x", "tools": "[{"}])


def _completion(body: dict):
    """The body as the official ``openai`` type (raises when it is not a ChatCompletion)."""
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate(body)


def test_a_chat_request_gets_an_openai_chat_completion(champion):
    tasks = champion.unwrap_python_model().manifest["tasks"]
    both = {**ASK, "tools": OPENAI_TOOLS + [FX_TOOL]}
    reply = _completion(champion.predict({**both, "custom_inputs": {"task": "travel"}, "model": "x",
                                          "temperature": 0.0}))
    assert reply.object == "chat.completion" and len(reply.choices) == 1
    choice = reply.choices[0]
    # the tiny model's text never parses into calls: the text is the content (the call form: below)
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert not choice.message.tool_calls and choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens <= 16  # FAST: eval.max_new_tokens
    assert reply.custom_outputs == {"task": "travel", "stopped_by": reply.custom_outputs["stopped_by"]}
    assert champion.predict(both)["custom_outputs"]["task"] == tasks[0]  # the documented default

    def prompt_tokens(**extra) -> int:
        return champion.predict({**both, "max_tokens": 1, **extra})["usage"]["prompt_tokens"]

    # tool_choice shapes the prompt: "none" offers no tool, a named function only that one
    full, no_tools = prompt_tokens(), prompt_tokens(tool_choice="none")
    fx_only = prompt_tokens(tool_choice={"type": "function", "function": {"name": "convert_currency"}})
    assert no_tools < fx_only < full
    assert fx_only == champion.predict({**ASK, "tools": [FX_TOOL], "max_tokens": 1})["usage"]["prompt_tokens"]
    assert prompt_tokens(tool_choice="required") == prompt_tokens(tool_choice="auto") == full
    short = _completion(champion.predict({**both, "max_completion_tokens": 2}))
    assert short.usage.completion_tokens <= 2
    # a conversation with an earlier call and its result, content as text parts
    convo = champion.predict({"tools": OPENAI_TOOLS, "messages": [
        {"role": "system", "content": "You call functions."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": json.dumps({"city": "Oslo"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12 C, rain"},
        {"role": "user", "content": "And in Bergen?"}]})
    one_turn = champion.predict({**ASK, "max_tokens": 1})["usage"]["prompt_tokens"]
    assert _completion(convo).usage.prompt_tokens > one_turn + 20  # the history is in the prompt


def test_parsed_calls_become_openai_tool_calls():
    text = '```\n[{"name": "get_weather", "arguments": {"city": "Oslo"}}, {"name": "convert_currency", ' \
           '"arguments": {"amount": 5, "to": "EUR"}}]\n```'
    answer = Answer(text, parse_calls(text), "travel", prompt_tokens=40, completion_tokens=30, stopped_by="eos")
    reply = _completion(chat_completion(answer, "hammer-fc"))
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("function", "get_weather", {"city": "Oslo"}), ("function", "convert_currency", {"amount": 5, "to": "EUR"})]
    assert len({c.id for c in choice.message.tool_calls}) == 2
    assert reply.usage.total_tokens == 70 and reply.model == "hammer-fc"
    # tool_choice "none": the same text is content, never a call; "no call" ([]) is content too
    assert _completion(chat_completion(answer, "m", calls_allowed=False)).choices[0].message.content == text
    no_call = _completion(chat_completion(Answer("[]", parse_calls("[]"), "travel", 40, 2, "eos"), "m"))
    assert no_call.choices[0].finish_reason == "stop" and no_call.choices[0].message.content == "[]"
    cut = _completion(chat_completion(Answer('[{"name": "get_w', None, "travel", 40, 9, "deadline"), "m"))
    assert cut.choices[0].finish_reason == "length" and cut.custom_outputs["stopped_by"] == "deadline"


@pytest.mark.parametrize("request_, problem", [
    ({"messages": []}, "'messages' must be a non-empty list"),
    ({**ASK, "messages": [{"role": "bot", "content": "x"}]}, "message 0 has the unknown role 'bot'"),
    ({**ASK, "tools": [{"type": "function", "function": {"description": "no name"}}]}, "bad tool: tool #0"),
    ({**ASK, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "names the function 'nope'"),
    ({**ASK, "tool_choice": "sometimes"}, "tool_choice must be"),
    ({**ASK, "custom_inputs": {"task": "nope"}}, "unknown task 'nope'; this model has"),
    ({**ASK, "custom_inputs": {"temperature": 1}}, "'custom_inputs' may only hold 'task'"),
    ({**ASK, "frequency_penalty": 0.5}, r"unsupported fields \['frequency_penalty'\]"),
    ({**ASK, "n": 2}, "'n' must be 1"),
    ({**ASK, "stream": True}, "'stream' is not supported"),
    ({**ASK, "max_tokens": 0}, "'max_tokens' must be a positive integer"),
    ({**ASK, "tools": OPENAI_TOOLS * 65}, r"too many tools: 65 > serving.max_tools = 64"),
    ({**ASK, "messages": [{"role": "user", "content": "Oslo " * 3000}]},
     r"prompt too long: \d+ tokens > serving.max_prompt_tokens = 2032"),  # the tiny base: 2048 - 16
    ({**ASK, "messages": [{"role": "user", "content": "x" * 300_000}]},
     r"request too large: \d+ bytes > serving.max_request_bytes = 262144"),
])
def test_bad_chat_requests_name_the_problem(champion, request_, problem):
    with pytest.raises(ValueError, match=problem):
        champion.predict(request_)


def test_downloaded_adapters_load_with_plain_peft_on_the_referenced_base(registered, champion, tmp_path):
    import mlflow
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hammer_core.model.base import build_tiny_model

    with use_tracking_uri(registered["tracking_uri"]):
        local = Path(mlflow.artifacts.download_artifacts("models:/hammer-fc@champion", dst_path=str(tmp_path)))
    arts = local / "artifacts"
    ref = json.loads((arts / "base_model.json").read_text())
    assert ref["name_or_path"] == "hammer-tiny-qwen2" and ref["dtype"] == "float32" and "revision" in ref
    assert sorted(ref["adapters"]) == sorted(ref["tasks"]) and len(ref["tasks"]) >= 2
    for task, rel in ref["adapters"].items():
        cfg = json.loads((arts / rel / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and (arts / rel / "adapter_model.safetensors").is_file()

    # the reference says how to rebuild the tiny base: it gives the very weights shipped beside the adapters
    base = AutoModelForCausalLM.from_pretrained(str(arts / ref["weights"]), dtype=torch.float32)
    rebuilt = build_tiny_model(ref["rebuild"]["vocab_size"], ref["rebuild"]["seed"])
    shipped = base.state_dict()
    for k, v in rebuilt.state_dict().items():
        assert torch.equal(v, shipped[k]), k

    task = ref["tasks"][-1]
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        peft_model = PeftModel.from_pretrained(base, str(arts / ref["adapters"][task])).eval()
        plain = peft_model(input_ids=ids).logits
        served = champion.unwrap_python_model().model
        served.set_adapter(task)
        theirs = served(input_ids=ids).logits
    torch.testing.assert_close(plain, theirs)
    assert not torch.allclose(plain, base_logits)  # the adapter is trained, not an identity


# The served model's limits, set the way a deployment overrides them without re-registering
# (MLflow's SERVING_MODEL_CONFIG): small, and max_new_tokens far beyond what the deadline allows
# (the tiny model never ends its answer: ~30 ms a token on a loaded CPU).
SERVED_LIMITS = {"max_request_bytes": 20_000, "max_tools": 4, "max_prompt_tokens": 400, "deadline_s": 1.5,
                 "max_new_tokens": 1000}


def _tree_rss_kb(pid: int) -> int:
    """VmRSS of a process and all its descendants (the CLI, uvicorn and its worker), in kB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir()
                     for c in (t / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


@pytest.fixture(scope="module")
def served(registered, tmp_path_factory):
    """``mlflow models serve -m models:/hammer-fc@champion`` on 127.0.0.1 with SERVED_LIMITS:
    yields (post(body, timeout) -> (status, json, seconds), server process)."""
    port = free_port()
    # as in an activated venv: the CLI runs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["tracking_uri"],
           "SERVING_MODEL_CONFIG": json.dumps(SERVED_LIMITS),
           "PATH": os.pathsep.join([str(Path(MLFLOW).parent), os.environ.get("PATH", "")])}
    env.pop("MLFLOW_REGISTRY_URI", None)
    cmd = [MLFLOW, "models", "serve", "-m", "models:/hammer-fc@champion", "--env-manager", "local",
           "--host", "127.0.0.1", "-p", str(port), "-w", "1"]
    url = f"http://127.0.0.1:{port}"

    def post(body: dict | bytes, timeout: float = 60) -> tuple[int, dict, float]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(f"{url}/invocations", data=data, headers={"Content-Type": "application/json"})
        start = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read()), time.monotonic() - start
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}"), time.monotonic() - start

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with loopback_server(cmd, f"{url}/ping", log, env=env, timeout=300) as proc:
        try:
            yield post, proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the CLI and the uvicorn worker it started


def test_mlflow_models_serve_answers_chat_completions(served):
    post, _ = served
    status, body, _ = post({**ASK, "custom_inputs": {"task": "travel"}, "max_tokens": 3})
    assert status == 200, body
    reply = _completion(body)  # the unwrapped chat body in, an OpenAI ChatCompletion out
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3
    assert reply.custom_outputs["task"] == "travel" and isinstance(reply.choices[0].message.content, str)
    status, body, _ = post({**ASK, "tool_choice": "none", "max_tokens": 1})
    assert status == 200 and _completion(body).usage.prompt_tokens < reply.usage.prompt_tokens
    for bad, problem in (({**ASK, "custom_inputs": {"task": "nope"}}, "unknown task 'nope'"),
                         ({**ASK, "stream": True}, "'stream' is not supported"),
                         ({"messages": "hi"}, "'messages' must be a non-empty list")):
        status, err, _ = post(bad)
        assert status == 400 and problem in err["message"], err


def test_mlflow_models_serve_answers_records(served):
    post, _ = served
    records = [{"query": "Weather in Oslo?", "tools": TOOLS, "task": "travel"},
               {"messages": [{"role": "user", "content": "Hi"}], "tools": json.dumps(TOOLS)}]
    status, body, _ = post({"dataframe_records": records})
    assert status == 200, body
    assert len(body["predictions"]) == 2
    for o in body["predictions"]:
        assert isinstance(o["calls"], list) and isinstance(o["raw"], str)
    assert body["predictions"][0]["task"] == "travel"
    status, inputs_body, _ = post({"inputs": records})
    assert status == 200
    # the same greedy text, each cut where its deadline fell
    for a, b in zip(body["predictions"], inputs_body["predictions"]):
        assert a["task"] == b["task"] and a["raw"] and b["raw"]
        assert a["raw"].startswith(b["raw"]) or b["raw"].startswith(a["raw"])
    status, err, _ = post({"dataframe_records": [{"query": "x", "tools": TOOLS, "task": "nope"}]})
    assert status == 400 and "request 0: unknown task 'nope'" in err["message"]


def _oversized() -> dict[str, dict]:
    many = [{"type": "function", "function": {**TOOLS[0], "name": f"tool_{i}"}} for i in range(10_000)]
    return {"max_request_bytes": {**ASK, "tools": many},                                    # ~1.2 MB
            "max_tools": {**ASK, "tools": many[:5]},
            "max_prompt_tokens": {**ASK, "messages": [{"role": "user", "content": "Oslo " * 1000}]}}


def test_served_limits_refuse_oversized_requests_quickly_and_keep_memory_flat(served):
    post, proc = served
    oversized = _oversized()
    assert len(json.dumps(oversized["max_request_bytes"])) > 1_000_000
    for limit, body in oversized.items():
        status, err, seconds = post(body, timeout=30)
        assert status == 400 and f"serving.{limit} = {SERVED_LIMITS[limit]}" in err["message"], (limit, err)
        assert len(err["message"]) < 200, err["message"][:300]  # the reason, not the request echoed back
        assert seconds < 5, (limit, seconds)
    before = _tree_rss_kb(proc.pid)
    answers: list = []
    threads = [threading.Thread(target=lambda b=b: answers.append(post(b, timeout=60)))
               for b in list(oversized.values()) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert len(answers) == len(threads) and all(status == 400 for status, _, _ in answers)
    after = _tree_rss_kb(proc.pid)
    assert after < before + 150_000, (before, after)  # kB; unbounded, one such request took GBs


def test_served_deadline_stops_a_long_generation(served):
    post, _ = served
    status, body, seconds = post(ASK, timeout=60)  # up to 1000 new tokens: ~30 s without the deadline
    assert status == 200, body
    reply = _completion(body)
    assert reply.custom_outputs["stopped_by"] == "deadline" and reply.choices[0].finish_reason == "length"
    assert 0 < reply.usage.completion_tokens < SERVED_LIMITS["max_new_tokens"]
    assert SERVED_LIMITS["deadline_s"] <= seconds < SERVED_LIMITS["deadline_s"] + 2.5, seconds

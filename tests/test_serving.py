"""The registered pyfunc as users meet it: ``models:/hammer-fc@champion`` loaded in Python and
behind ``mlflow models serve``, and its artifacts (N standard PEFT adapters + a base-model
reference) downloaded and loaded with plain peft. All on the session's pipeline run (sqlite
store, where its one version is the champion)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hammer_core.registry import use_tracking_uri

from .conftest import free_port, loopback_server

pytestmark = pytest.mark.slow

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
TOOLS = [{"name": "get_weather", "description": "Current weather for a city.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
OPENAI_TOOLS = [{"type": "function", "function": TOOLS[0]}]


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


def test_predict_takes_a_dataframe_records_or_one_dict(champion):
    import pandas as pd

    tasks = champion.unwrap_python_model().manifest["tasks"]
    rows = [{"query": "Weather in Oslo?", "tools": TOOLS, "task": "travel"},
            {"messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": json.dumps(OPENAI_TOOLS)},
            {"query": "Tell me a joke.", "tools": []}]
    out = champion.predict(pd.DataFrame(rows))  # missing cells are NaN: the task defaults, query/messages pick
    assert len(out) == 3
    _well_formed(out, tasks)
    assert [o["task"] for o in out] == ["travel", tasks[0], tasks[0]]
    # the same requests as records, and one request as a dict, give the same (greedy) answers
    assert champion.predict(rows) == out
    assert champion.predict(rows[0]) == out[:1]
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


def test_downloaded_adapters_load_with_plain_peft_on_the_referenced_base(registered, champion, tmp_path):
    import mlflow
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hammer_core.modeling import build_tiny_model

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


def test_mlflow_models_serve_answers_invocations(registered, tmp_path):
    port = free_port()
    # as in an activated venv: the CLI runs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["tracking_uri"],
           "PATH": os.pathsep.join([str(Path(MLFLOW).parent), os.environ.get("PATH", "")])}
    env.pop("MLFLOW_REGISTRY_URI", None)
    cmd = [MLFLOW, "models", "serve", "-m", "models:/hammer-fc@champion", "--env-manager", "local",
           "--host", "127.0.0.1", "-p", str(port), "-w", "1"]
    url = f"http://127.0.0.1:{port}"

    def post(body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    with loopback_server(cmd, f"{url}/ping", tmp_path / "serve.log", env=env, timeout=300) as proc:
        try:
            records = [{"query": "Weather in Oslo?", "tools": TOOLS, "task": "travel"},
                       {"messages": [{"role": "user", "content": "Hi"}], "tools": json.dumps(TOOLS)}]
            status, body = post({"dataframe_records": records})
            assert status == 200, body
            assert len(body["predictions"]) == 2
            for o in body["predictions"]:
                assert isinstance(o["calls"], list) and isinstance(o["raw"], str)
            assert body["predictions"][0]["task"] == "travel"
            status, inputs_body = post({"inputs": records})
            assert status == 200 and inputs_body == body
            status, err = post({"dataframe_records": [{"query": "x", "tools": TOOLS, "task": "nope"}]})
            assert status == 400 and "request 0: unknown task 'nope'" in err["message"]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the CLI and the uvicorn worker it started

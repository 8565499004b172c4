"""HTTPEngine against a local fake OpenAI-compatible server (http.server in a thread)."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ftllm.config import EngineSpec, SamplingSpec
from ftllm.engine import http as http_engine
from ftllm.engine import make_engine


class FakeServer:
    """Answers /v1/completions; `script` is a list of actions for the first requests ("503", "sleep")."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.script: list[str] = []
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    action = server.script.pop(0) if server.script else "ok"
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if action == "sleep":
                        time.sleep(1.0)
                    time.sleep(server.delay_s)
                    if action == "503":
                        self._send(503, {"error": "overloaded"})
                    elif action == "400":
                        self._send(400, {"error": "bad request"})
                    else:
                        self._send(200, server.answer(body))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def answer(body: dict) -> dict:
        """Text names the prompt's first token id and the choice index, so order can be checked."""
        choices = [
            {
                "index": i,
                "text": f"p{body['prompt'][0]}-c{i}",
                "logprobs": {"tokens": ["a", "b", "c"], "token_logprobs": [-0.5, -0.25, -0.25]},
                "finish_reason": "length" if i == 1 else "stop",
            }
            for i in reversed(range(body["n"]))  # out of order on purpose
        ]
        return {"choices": choices, "usage": {"completion_tokens": 3 * body["n"]}}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(http_engine, "BACKOFF_BASE_S", 0.01)
    fake = FakeServer()
    yield fake
    fake.close()


def _engine(tiny_model, server, **spec):
    return make_engine(EngineSpec(model=str(tiny_model), backend="http", base_url=server.url, **spec))


def test_generate_ids_sends_token_prompts_and_reads_choices(tiny_model, server, monkeypatch):
    monkeypatch.setenv("FTLLM_TEST_KEY", "sk-secret")
    sampling = SamplingSpec(n=2, temperature=0.5, max_new_tokens=7, seed=3, stop=["</answer>"], logprobs=True)
    finished = []
    with _engine(tiny_model, server, api_key_env="FTLLM_TEST_KEY") as engine:
        outs = engine.generate_ids([[11, 12], [21], [31, 32, 33]], sampling,
                                   on_finished=lambda p, cs: finished.append(cs))
    assert sorted(c[0].text for c in finished) == ["p11-c0", "p21-c0", "p31-c0"]
    assert [[c.text for c in o] for o in outs] == [["p11-c0", "p11-c1"], ["p21-c0", "p21-c1"], ["p31-c0", "p31-c1"]]
    first = outs[0]
    assert first[0].num_tokens == 3 and first[0].cumulative_logprob == pytest.approx(-1.0)
    assert [c.finish_reason for c in first] == ["stop", "length"]
    body = next(r for r in server.requests if r["prompt"] == [11, 12])
    assert body["n"] == 2 and body["max_tokens"] == 7 and body["seed"] == 3 and body["stop"] == ["</answer>"]
    assert body["model"] == str(tiny_model) and body["logprobs"] >= 0
    assert all(h.get("Authorization") == "Bearer sk-secret" for h in server.headers)


def test_chat_renders_with_the_template(tiny_model, server):
    with _engine(tiny_model, server) as engine:
        engine.chat([[{"role": "user", "content": "1+1?"}]], SamplingSpec(n=1))
        expected = engine.tokenizer.apply_chat_template(
            [{"role": "user", "content": "1+1?"}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
    assert server.requests[0]["prompt"] == list(expected)
    assert "Authorization" not in server.headers[0]


def test_503_is_retried(tiny_model, server):
    server.script = ["503"]
    with _engine(tiny_model, server, max_retries=2) as engine:
        outs = engine.generate_ids([[5]], SamplingSpec(n=1))
    assert outs[0][0].text == "p5-c0"
    assert len(server.requests) == 2


def test_timeout_is_retried(tiny_model, server):
    server.script = ["sleep"]
    with _engine(tiny_model, server, max_retries=1, request_timeout_s=0.3) as engine:
        outs = engine.generate_ids([[6]], SamplingSpec(n=1))
    assert outs[0][0].text == "p6-c0"
    assert len(server.requests) == 2


def test_gives_up_without_leaking_the_key(tiny_model, server, monkeypatch):
    monkeypatch.setenv("FTLLM_TEST_KEY", "sk-secret")
    server.script = ["503"] * 5
    with (
        _engine(tiny_model, server, max_retries=2, api_key_env="FTLLM_TEST_KEY") as engine,
        pytest.raises(http_engine.EngineError) as err,
    ):
        engine.generate_ids([[7]], SamplingSpec(n=1))
    assert "503" in str(err.value) and "sk-secret" not in str(err.value)
    assert len(server.requests) == 3


def test_client_errors_are_not_retried(tiny_model, server):
    server.script = ["400"]
    with (
        _engine(tiny_model, server, max_retries=3) as engine,
        pytest.raises(http_engine.EngineError, match="HTTP 400"),
    ):
        engine.generate_ids([[8]], SamplingSpec(n=1))
    assert len(server.requests) == 1


def test_concurrency_is_bounded(tiny_model, server):
    server.delay_s = 0.2  # long enough that a loaded machine still has two requests in flight at once
    with _engine(tiny_model, server, max_concurrency=2) as engine:
        outs = engine.generate_ids([[i] for i in range(10)], SamplingSpec(n=1))
    assert [o[0].text for o in outs] == [f"p{i}-c0" for i in range(10)]
    assert server.max_in_flight == 2

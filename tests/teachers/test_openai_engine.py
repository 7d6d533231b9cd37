"""The OpenAI-compatible engine against a real server: vLLM's OpenAI server (``vllm serve``, the CPU build in
``.venv-vllm``) serving the embedded SmolLM2 on localhost, alone and behind a fault-injecting proxy.

vLLM runs in float32 with eager execution and no chunked prefill: the same settings as the ``vllm`` engine on
CPU (``distill_ray/teachers/vllm.py``), so greedy completions match the logprobs it reports."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from distill_ray.models import resolve_model
from distill_ray.prompts import Exemplar, build_messages
from distill_ray.teachers import SamplingSettings, make_engine
from distill_ray.teachers.vllm import cpu_environment, vllm_python

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(vllm_python() is None,
                                 reason=".venv-vllm is absent: `bash scripts/setup_vllm.sh` builds it (~2.5 min)")]
SHOT = Exemplar("def sat(x: int) -> bool:\n    return x - 1 == 4", "def sol():\n    return 4 + 1")
QUESTIONS = ["def sat(x: int) -> bool:\n    return x + 2 == 5", "def sat(x: int) -> bool:\n    return x * 7 == 21"]
PREFIX = "def sol():\n    return "
READY_S = 300   # vLLM on CPU starts in 20-40 s on idle cores; a loaded machine takes longer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    command = [vllm_python(), "-m", "vllm.entrypoints.openai.api_server", "--model", str(resolve_model("smollm2")),
               "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
               "--enforce-eager", "--no-enable-chunked-prefill", "--max-model-len", "2048", "--max-num-seqs", "8",
               "--disable-log-stats", "--uvicorn-log-level", "warning"]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                   env={**os.environ, **cpu_environment(None, 1)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited ({process.returncode}): {log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm serve did not become ready in {READY_S} s: {log.read_text()[-3000:]}")
                time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class FaultProxy:
    """An HTTP proxy in front of the server that answers each request by the next planned fault:
    ``500``/``429``/``400`` (an error status), ``slow`` (answer only after ``delay`` s), or ``pass``
    (forward). With the plan used up it forwards, or repeats ``always`` when set. ``drop_n`` removes ``n`` from
    every request it forwards: the server then answers one choice, like servers that ignore ``n``."""

    def __init__(self, target: str, plan: list[str], always: str | None = None, delay: float = 3.0,
                 drop_n: bool = False):
        self.target, self.plan, self.always, self.delay = target, collections.deque(plan), always, delay
        self.drop_n = drop_n
        self.seen: list[str] = []          # the fault applied to each request, in arrival order
        self.auth: list[str | None] = []   # the Authorization header of each request
        self.in_flight = self.max_in_flight = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)

    def _serve(self):
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._loop = asyncio.new_event_loop()
        self._runner = runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request):
        from aiohttp import ClientSession, web

        fault = self.plan.popleft() if self.plan else (self.always or "pass")
        self.seen.append(fault)
        self.auth.append(request.headers.get("Authorization"))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if fault in ("500", "429", "400"):
                return web.json_response({"error": {"message": f"injected {fault}"}}, status=int(fault),
                                         headers={"Retry-After": "0"} if fault == "429" else None)
            if fault == "slow":
                await asyncio.sleep(self.delay)
            body = await request.read()
            if self.drop_n and body:
                body = json.dumps({k: v for k, v in json.loads(body).items() if k != "n"}).encode()
            async with ClientSession() as session:
                async with session.request(request.method, self.target + request.path_qs, data=body,
                                           headers={"Content-Type": "application/json"}) as upstream:
                    return web.Response(status=upstream.status, body=await upstream.read(),
                                        content_type=upstream.content_type)
        finally:
            self.in_flight -= 1

    def close(self):
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def closing():
    """Closes the proxies and engines a test registers, also when it fails."""
    things = []
    yield lambda thing: things.append(thing) or thing
    for thing in reversed(things):
        thing.close()


def engine_for(url: str, **options):
    return make_engine("openai", "smollm2", base_url=url, tokenizer="smollm2", **options)


def prompts(engine) -> list[str]:
    return [engine.render(build_messages("p3", q, [SHOT]), PREFIX) for q in QUESTIONS]


def test_n_seeded_samples_per_prompt_in_one_request(server, closing):
    proxy = closing(FaultProxy(server, []))
    engine = closing(engine_for(proxy.url))
    batch = engine.generate(prompts(engine), SamplingSettings(n=3, temperature=1.0, max_new_tokens=8, seed=5))
    assert [len(row) for row in batch] == [3, 3] and engine._honours_n is True
    assert len(proxy.seen) == 2                                      # one request per prompt, n=3 each
    assert any(len({g.text for g in row}) > 1 for row in batch)


def test_n_seeded_samples_per_prompt_from_a_server_that_ignores_n(server, closing):
    proxy = closing(FaultProxy(server, [], drop_n=True))
    engine = closing(engine_for(proxy.url))
    sampling = SamplingSettings(n=3, temperature=1.0, max_new_tokens=8, seed=5)
    batch = engine.generate(prompts(engine), sampling)
    assert [len(row) for row in batch] == [3, 3]
    assert engine._honours_n is False  # one choice came back; the rest were topped up, one request each
    assert any(len({g.text for g in row}) > 1 for row in batch)  # distinct seeds, distinct samples
    again = engine.generate(prompts(engine), sampling)
    assert [[g.text for g in row] for row in again] == [[g.text for g in row] for row in batch]
    for row, prompt in zip(batch, prompts(engine)):
        expected = len(engine.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert all(g.prompt_tokens == expected and 1 <= g.completion_tokens <= 8 and g.error is None for g in row)
    assert batch.stats.samples == 6 and batch.stats.prompt_tokens == sum(row[0].prompt_tokens for row in batch)
    assert batch.stats.completion_tokens == sum(g.completion_tokens for row in batch for g in row)


def test_greedy_logprobs_are_sorted_top_k_and_spell_the_completion(server, closing):
    engine = closing(engine_for(f"{server}/v1"))
    batch = engine.generate(prompts(engine), SamplingSettings(n=1, temperature=0.0, max_new_tokens=6,
                                                              top_k_logprobs=3))
    for [g] in batch:
        assert len(g.logprobs) == g.completion_tokens
        for top in g.logprobs:
            assert len(top) == 3 and [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
            assert all(lp <= 0 for _, lp in top)
        greedy_ids = [top[0][0] for top in g.logprobs]  # greedy: the chosen token is the most likely one
        assert -1 not in greedy_ids
        assert engine.tokenizer.decode(greedy_ids) == g.text


def test_a_stop_string_ends_the_completion_before_it(server, closing):
    engine = closing(engine_for(f"{server}/v1"))
    greedy = dict(n=1, temperature=0.0, max_new_tokens=12)
    [[free], _] = engine.generate(prompts(engine), SamplingSettings(**greedy))
    stop = next(c for c in reversed(free.text) if not c.isspace())   # a character the completion does write
    [[stopped], _] = engine.generate(prompts(engine), SamplingSettings(**greedy, stop=(stop,)))
    assert stopped.text == free.text[:free.text.index(stop)] and stopped.finished


def test_without_a_tokenizer_the_chat_api_is_used(server, closing):
    engine = closing(make_engine("openai", "smollm2", base_url=f"{server}/v1"))
    [[g]] = engine.generate([engine.render(build_messages("p3", QUESTIONS[0], [SHOT]), PREFIX)],
                            SamplingSettings(n=1, temperature=0.0, max_new_tokens=16))
    assert g.error is None and g.text.strip() and g.prompt_tokens > 20 and g.completion_tokens >= 1


def test_transient_faults_are_retried_until_the_request_succeeds(server, closing):
    proxy = closing(FaultProxy(server, ["500", "429", "slow"], delay=3.0))
    engine = closing(engine_for(proxy.url, max_retries=3, backoff_s=0.01, timeout_s=1.0))
    batch = engine.generate(prompts(engine)[:1], SamplingSettings(n=1, temperature=0.0, max_new_tokens=4))
    assert batch[0][0].error is None and batch[0][0].completion_tokens >= 1
    assert proxy.seen == ["500", "429", "slow", "pass"] and batch.stats.retries == 3


def test_exhausted_retries_and_permanent_errors_become_rows_with_the_error(server, closing):
    proxy = closing(FaultProxy(server, ["400"], always="500"))
    engine = closing(engine_for(proxy.url, max_retries=2, backoff_s=0.01))
    batch = engine.generate(prompts(engine), SamplingSettings(n=2, temperature=1.0, max_new_tokens=4))
    flat = [g for row in batch for g in row]
    assert len(flat) == 4 and all(g.text == "" and not g.finished for g in flat)
    errors = sorted({g.error.split(":")[0] for g in flat})
    assert errors == ["HTTP 400 after 1 attempt(s)", "HTTP 500 after 3 attempt(s)"]
    assert len(proxy.seen) == 1 + 3 and batch.stats.errors == 4  # 400 is not retried; 500 three times


def test_concurrency_is_bounded_and_the_key_comes_from_the_named_variable(server, closing, monkeypatch):
    proxy = closing(FaultProxy(server, []))
    monkeypatch.setenv("DISTILL_TEST_KEY", "sk-test-secret")
    engine = closing(engine_for(proxy.url, api_key_env="DISTILL_TEST_KEY", max_concurrency=2))
    batch = engine.generate(prompts(engine) * 2, SamplingSettings(n=1, temperature=0.0, max_new_tokens=2))
    assert len(batch) == 4 and all(row[0].error is None for row in batch)
    assert 1 <= proxy.max_in_flight <= 2  # unbounded, all 4 would be in flight at once
    assert set(proxy.auth) == {"Bearer sk-test-secret"}
    assert "sk-test-secret" not in repr(engine.provenance()) + repr(list(batch))
    monkeypatch.delenv("DISTILL_TEST_KEY")
    with pytest.raises(ValueError, match="DISTILL_TEST_KEY") as error:
        engine_for(proxy.url, api_key_env="DISTILL_TEST_KEY")
    assert "sk-" not in str(error.value)

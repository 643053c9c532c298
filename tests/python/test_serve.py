"""`lintime serve` over HTTP on loopback: the official openai client (completion, chat, streaming),
16 concurrent streaming clients each getting what generation alone gives (prefix-state cache on
and off), every refusal as OpenAI's error JSON with its status, a client that disconnects freeing
its slot, and SIGTERM letting a running stream finish before exiting 0."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import torch

import lintime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("LINTIME_BINARY", os.path.join(ROOT, "build", "lintime"))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "fla_parity", "gsa")  # a tiny GSA, vocabulary 256

pytestmark = pytest.mark.skipif(not os.path.exists(BINARY), reason=f"no lintime binary at {BINARY}")


def byte_tokenizer(folder):
    """GPT-2's byte-to-symbol table with no merges: token i is byte i; <|endoftext|> = 256."""
    symbols, extra = {}, 0
    for b in range(256):
        printable = ord("!") <= b <= ord("~") or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF
        symbols[chr(b) if printable else chr(256 + extra)] = b
        extra += 0 if printable else 1
    symbols["<|endoftext|>"] = 256
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(symbols, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served") / "tiny-gsa"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("expected*"))
    byte_tokenizer(folder)
    return str(folder)


class Server:
    def __init__(self, model_dir, *args):
        self.process = subprocess.Popen([BINARY, "serve", model_dir, "--port", "0", "--device", "cpu", *args],
                                        stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        line = self.process.stderr.readline()
        assert "listening on http://127.0.0.1:" in line, line + self.process.stderr.read()
        self.port = int(line.split("127.0.0.1:")[1].split(" ")[0])
        self.headers = {"Content-Type": "application/json"}

    def request(self, method, path, body=None, headers=None, raw=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        connection.request(method, path, payload, {**self.headers, **(headers or {})})
        response = connection.getresponse()
        text = response.read().decode()
        connection.close()
        return response.status, dict(response.getheaders()), text

    def post(self, path, body, **kwargs):
        status, headers, text = self.request("POST", path, body, **kwargs)
        return status, headers, json.loads(text) if text.startswith("{") else text

    def stream(self, path, body, headers=None):
        """The text deltas of a streamed request, and the events' JSON."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.request("POST", path, json.dumps({**body, "stream": True}), {**self.headers, **(headers or {})})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        events = []
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                events.append("[DONE]")
                break
            events.append(json.loads(line[len("data: "):]))
        connection.close()
        return events

    def metric(self, name):
        _, _, text = self.request("GET", "/metrics")
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def stop(self, timeout=30):
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.process.stderr.close()
        return code


def stream_text(events):
    text = ""
    for event in events:
        if event == "[DONE]" or not event["choices"]:
            continue
        choice = event["choices"][0]
        text += choice.get("text", "") if "text" in choice else choice["delta"].get("content", "")
    return text


def generated_alone(model_dir, prompt, max_tokens):
    """What generation alone gives for a prompt: lintime's generate loop, greedy (the CLI's)."""
    model = lintime.load_model(model_dir)
    ids = torch.tensor([list(prompt.encode())])
    tokens = model.generate(ids, max_new_tokens=max_tokens, temperature=0.0, eos_token_id=256)[0]
    return bytes(tokens).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def server(model_dir):
    s = Server(model_dir, "--api-key", "secret", "--max-sequences", "2", "--max-queue", "1",
               "--max-prompt-tokens", "64", "--max-new-tokens", "100000")
    s.headers["Authorization"] = "Bearer secret"
    yield s
    assert s.stop() == 0


def test_the_openai_client_completes_chats_and_streams(server, model_dir):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="secret", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny-gsa"]
    completion = client.completions.create(model="tiny-gsa", prompt="Hello there", max_tokens=10, temperature=0)
    cli = subprocess.run([BINARY, "generate", model_dir, "--prompt", "Hello there", "--max-new-tokens", "10",
                          "--greedy", "--device", "cpu"], capture_output=True, check=True)
    assert completion.choices[0].text == cli.stdout.decode("utf-8", "replace").removesuffix("\n")
    assert completion.usage.prompt_tokens == 11 and completion.usage.completion_tokens == 10
    assert completion.choices[0].finish_reason == "length"

    streamed = "".join(chunk.choices[0].text for chunk in client.completions.create(
        model="tiny-gsa", prompt="Hello there", max_tokens=10, temperature=0, stream=True) if chunk.choices)
    assert streamed == completion.choices[0].text

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    chat = client.chat.completions.create(model="tiny-gsa", messages=messages, max_tokens=6, temperature=0)
    assert chat.choices[0].message.role == "assistant"
    # The folder has no chat template: the plain format.
    assert chat.choices[0].message.content == generated_alone(model_dir, "System: Be brief.\nUser: Hi\nAssistant:", 6)
    chunks = list(client.chat.completions.create(model="tiny-gsa", messages=messages, max_tokens=6, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 6

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="wrong", max_retries=0).models.list()


@pytest.mark.parametrize("prefix_cache", ["256", "0"], ids=["prefix_cache", "no_prefix_cache"])
def test_sixteen_concurrent_streams_each_get_what_generation_alone_gives(model_dir, prefix_cache):
    server = Server(model_dir, "--max-sequences", "6", "--max-queue", "16", "--prefill-chunk", "8",
                    "--prefix-cache-mb", prefix_cache)
    system = "You are a tiny model. "  # a shared prefix longer than two prefill chunks
    prompts = [(system if i % 2 == 0 else "") + f"request {i}: " + "abc"[: i % 4] for i in range(16)]
    budgets = [5 + i % 6 for i in range(16)]
    results = [None] * 16

    def client(i):
        time.sleep(0.01 * i)
        results[i] = stream_text(server.stream("/v1/completions", {"model": "tiny-gsa", "prompt": prompts[i],
                                                                   "max_tokens": budgets[i], "temperature": 0}))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hits = server.metric("lintime_prefix_cache_hits_total")
    deadline = time.time() + 10  # a finished sequence leaves the engine at the end of its iteration
    while server.metric("lintime_active_sequences") > 0 and time.time() < deadline:
        time.sleep(0.01)
    assert server.metric("lintime_active_sequences") == 0
    assert server.stop() == 0
    for i in range(16):
        assert results[i] == generated_alone(model_dir, prompts[i], budgets[i]), f"request {i}"
    assert (hits > 0) == (prefix_cache != "0")


def test_refusals_are_openai_errors(server):
    def error(status, body, **kwargs):
        got, headers, answer = server.post("/v1/completions", body, **kwargs)
        assert got == status, answer
        assert set(answer["error"]) == {"message", "type", "param", "code"}
        return answer["error"], headers

    ok = {"model": "tiny-gsa", "prompt": "hi", "max_tokens": 2}
    assert error(400, None, raw="{not json")[0]["message"].startswith("malformed JSON in the request body")
    assert error(400, {**ok, "max_tokens": "2"})[0]["param"] == "max_tokens"
    assert error(400, {**ok, "max_tokens": 0})[0]["message"] == "max_tokens: expected a positive integer, got 0"
    assert error(400, {**ok, "n": 2})[0]["message"] == "n: only n = 1 is supported, got 2"
    assert error(400, {**ok, "logprobs": 3})[0]["param"] == "logprobs"
    assert error(404, {**ok, "model": "gpt-4"})[0]["param"] == "model"
    over = error(400, {**ok, "prompt": "x" * 65})[0]
    assert over["message"] == "the prompt has 65 tokens, over the server's limit of 64 (--max-prompt-tokens)"
    assert error(400, {**ok, "prompt": [1, 2, 999]})[0]["message"] == "token id 999 is outside the vocabulary [0, 256)"
    missing, _ = error(401, ok, headers={"Authorization": ""})
    assert missing["type"] == "authentication_error"
    assert error(401, ok, headers={"Authorization": "Bearer nope"})[0]["message"].startswith("incorrect API key")
    status, _, text = server.request("GET", "/v1/nothing")
    assert status == 404 and json.loads(text)["error"]["message"] == "unknown endpoint GET /v1/nothing"
    status, _, text = server.request("GET", "/health")
    assert status == 200 and json.loads(text) == {"status": "ok"}


def test_a_full_server_answers_503_and_disconnected_clients_free_their_slots(server):
    # Two slots and one queue place, taken by three endless streams whose clients then leave. Each
    # stream is read as it comes (a client that stops reading would, after the server's write
    # timeout, count as gone and free its slot before the check).
    connections, first_events = [], []

    def read_stream(connection):
        try:
            response = connection.getresponse()
            first_events.append((response.status, response.readline()))
            while response.read(4096):
                pass
        except Exception:  # noqa: BLE001 (the test shut the connection: http.client fails in several ways)
            pass

    readers = []
    for _ in range(3):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        connection.request("POST", "/v1/completions", json.dumps({"model": "tiny-gsa", "prompt": "go", "stream": True,
                                                                  "max_tokens": 100000}), server.headers)
        connections.append(connection)
        readers.append(threading.Thread(target=read_stream, args=(connection,), daemon=True))
        readers[-1].start()
    try:
        deadline = time.time() + 30
        while (server.metric("lintime_active_sequences") < 2 or server.metric("lintime_queue_length") < 1
               or len(first_events) < 2) and time.time() < deadline:
            time.sleep(0.02)
        assert [status for status, _ in first_events] == [200, 200]
        assert all(line.startswith(b"data: ") for _, line in first_events)
        status, headers, answer = server.post("/v1/completions", {"model": "tiny-gsa", "prompt": "hi", "max_tokens": 1})
        assert status == 503 and headers.get("Retry-After") == "1", answer
        assert answer["error"]["message"].startswith("the server is busy")
    finally:  # the clients leave (the server's drain at teardown would wait for endless streams)
        for connection in connections:
            if connection.sock is not None:
                connection.sock.shutdown(socket.SHUT_RDWR)
            connection.close()
        for reader in readers:
            reader.join(timeout=10)
    while (server.metric("lintime_active_sequences") > 0 or server.metric("lintime_queue_length") > 0) \
            and time.time() < deadline:
        time.sleep(0.02)
    assert server.metric("lintime_active_sequences") == 0 and server.metric("lintime_queue_length") == 0
    status, _, answer = server.post("/v1/completions", {"model": "tiny-gsa", "prompt": "hi", "max_tokens": 1})
    assert status == 200, answer


def test_sigterm_lets_running_streams_finish_then_exits_zero(model_dir):
    server = Server(model_dir, "--grace-seconds", "30", "--max-new-tokens", "4000")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request("POST", "/v1/completions", json.dumps({"model": "tiny-gsa", "prompt": "go", "stream": True,
                                                              "max_tokens": 4000, "temperature": 0}), server.headers)
    response = connection.getresponse()
    assert response.readline().startswith(b"data: ")
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    status, _, text = server.request("GET", "/health")
    assert status == 503 and json.loads(text)["status"] == "shutting down"
    status, _, answer = server.post("/v1/completions", {"model": "tiny-gsa", "prompt": "hi", "max_tokens": 1})
    assert status == 503 and "shutting down" in answer["error"]["message"]
    rest = response.read().decode()
    assert rest.rstrip().endswith("data: [DONE]") and '"finish_reason":"length"' in rest
    assert server.process.wait(timeout=30) == 0

#!/usr/bin/env python3
"""Drives `lintime serve` with N concurrent streams and reports output tokens/s, time to first
token and the server's peak memory, for each model folder given (a GSA next to the Transformer++
it was converted from, say), and the prefix-state cache's effect on time to first token when
every prompt shares a long system prompt. One JSON line per measurement (--jsonl). A benchmark,
not a test.

    python3 bench/serve.py MODEL_DIR... [--streams 1,4,16,64] [--prompt-tokens 256]
        [--new-tokens 128] [--device cpu] [--server-args "--dtype bfloat16"] [--no-prefix-cache-runs]
        [--client-processes N] [--jsonl FILE]

Each line also carries the server's own mean interval between a sequence's tokens
(`server_token_interval_mean_ms`, from its /metrics), which does not depend on how fast the
client reads, and the mean of its batched decode steps in iterations that prefilled nothing
(`server_decode_step_mean_ms` over `server_decode_steps`): the steady step, apart from the
prompt chunks interleaved while streams arrive.
"""
import argparse
import concurrent.futures
import http.client
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Server:
    def __init__(self, binary, model_dir, device, *args):
        self.process = subprocess.Popen([binary, "serve", model_dir, "--port", "0", "--device", device, *args],
                                        stderr=subprocess.PIPE, text=True)
        line = self.process.stderr.readline()
        if "listening on" not in line:
            raise RuntimeError(line + self.process.stderr.read())
        self.port = int(line.split("127.0.0.1:")[1].split(" ")[0])
        # The server's later lines (errors) go to ours; an unread pipe would fill and stall it.
        threading.Thread(target=lambda: [print("[server]", l, end="", file=sys.stderr) for l in self.process.stderr],
                         daemon=True).start()
        self.model = json.loads(self.get("/v1/models"))["data"][0]["id"]

    def get(self, path):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        connection.request("GET", path)
        return connection.getresponse().read().decode()

    def memory_peak_gib(self):
        """The server's lintime_memory_peak_bytes (the GPU allocator's peak on a GPU)."""
        for line in self.get("/metrics").splitlines():
            if line.startswith("lintime_memory_peak_bytes "):
                return round(float(line.split()[1]) / 2 ** 30, 2)
        return float("nan")

    def peak_rss_mb(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def metric(self, name):
        """A value of the server's /metrics (a counter, gauge, or a histogram's _sum / _count)."""
        for line in self.get("/metrics").splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return float("nan")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)


def stream(port, model, prompt, new_tokens):
    """(seconds to the first token, tokens received, seconds in all) of one streamed request."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"model": model, "prompt": prompt, "max_tokens": new_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(response.read().decode())
    first, tokens = None, 0
    for line in response:
        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
            continue
        event = json.loads(line[6:])
        if first is None and event["choices"]:
            first = time.perf_counter() - start
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
    return first, tokens, time.perf_counter() - start


def stream_group(port, model, prompts, new_tokens):
    """The streams of one client process, each on its own thread; None for a failed stream."""
    results = [None] * len(prompts)

    def client(i):
        try:
            results[i] = stream(port, model, prompts[i], new_tokens)
        except Exception as error:  # counted, not hidden: a failed stream makes the line's `failed_streams`
            print(f"stream: {type(error).__name__}: {error}", file=sys.stderr)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def run_streams(server, prompts, new_tokens, processes):
    """All streams at once, spread over `processes` client processes: one Python process parsing
    every stream's events would itself limit the tokens/s it can count (its GIL)."""
    groups = [prompts[i::processes] for i in range(processes) if prompts[i::processes]]
    interval_sum = server.metric("lintime_time_per_output_token_seconds_sum")
    interval_count = server.metric("lintime_time_per_output_token_seconds_count")
    step_sum = server.metric("lintime_decode_step_seconds_sum")
    step_count = server.metric("lintime_decode_step_seconds_count")
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(len(groups), mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(stream_group, server.port, server.model, group, new_tokens) for group in groups]
        results = [r for f in futures for r in f.result()]
    seconds = time.perf_counter() - start
    intervals = server.metric("lintime_time_per_output_token_seconds_count") - interval_count
    interval_ms = 1e3 * (server.metric("lintime_time_per_output_token_seconds_sum") - interval_sum) / max(intervals, 1)
    steps = server.metric("lintime_decode_step_seconds_count") - step_count
    step_ms = 1e3 * (server.metric("lintime_decode_step_seconds_sum") - step_sum) / max(steps, 1)
    failed = sum(r is None for r in results)
    results = [r for r in results if r is not None] or [(float("nan"), 0, seconds)]
    ttfts = [r[0] for r in results]
    return dict(failed_streams=failed, output_tokens=sum(r[1] for r in results), seconds=round(seconds, 3),
                output_tokens_per_s=round(sum(r[1] for r in results) / seconds, 1),
                ttft_mean_s=round(statistics.mean(ttfts), 4), ttft_p50_s=round(statistics.median(ttfts), 4),
                client_processes=len(groups), server_token_interval_mean_ms=round(interval_ms, 3),
                server_decode_steps=int(steps), server_decode_step_mean_ms=round(step_ms, 3))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--binary", default=os.path.join(ROOT, "build", "lintime"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--streams", default="1,4,16,64")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--shared-prefix-tokens", type=int, default=1024,
                        help="the system prompt of the prefix-cache measurement")
    parser.add_argument("--server-args", default="", help="more flags for lintime serve, e.g. \"--dtype bfloat16\"")
    parser.add_argument("--no-prefix-cache-runs", action="store_true", help="skip the prefix-cache measurement")
    parser.add_argument("--client-processes", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="client processes the streams are spread over (default: half the CPUs)")
    parser.add_argument("--jsonl", default=None)
    parser.add_argument("--commit", default=None)
    args = parser.parse_args()
    extra = args.server_args.split()
    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                           cwd=ROOT).stdout.strip()
    streams = [int(s) for s in args.streams.split(",")]
    lines = []

    def record(line):
        line = dict(bench="serve", commit=commit, device=args.device, server_args=args.server_args, **line)
        print(json.dumps(line), flush=True)
        lines.append(line)

    for model_dir in args.models:
        slots = max(streams)
        # The longest sequence is the prompt and its new tokens: what a KV cache reserves per slot.
        server = Server(args.binary, model_dir, args.device, "--max-sequences", str(slots), "--max-queue", "0",
                        "--max-prompt-tokens", str(args.prompt_tokens),
                        "--max-new-tokens", str(args.new_tokens), "--prefix-cache-mb", "0", *extra)
        name = os.path.basename(os.path.normpath(model_dir))
        try:
            for n in streams:
                # Distinct prompts of token ids (no prefix shared), so that every stream prefills in full.
                prompts = [[(97 + 13 * i + 7 * t) % 251 + 1 for t in range(args.prompt_tokens)] for i in range(n)]
                record(dict(model=name, streams=n, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                            **run_streams(server, prompts, args.new_tokens, min(n, args.client_processes)),
                            server_peak_rss_mb=server.peak_rss_mb(),
                            server_memory_peak_gib=server.memory_peak_gib()))
        finally:
            server.stop()
        if args.no_prefix_cache_runs:
            continue
        # The prefix-state cache: 8 requests in turn, each a long shared system prompt and its own question.
        system = [(5 + 3 * t) % 251 + 1 for t in range(args.shared_prefix_tokens)]
        for cache_mb in ["256", "0"]:
            server = Server(args.binary, model_dir, args.device, "--prefix-cache-mb", cache_mb, "--max-prompt-tokens",
                            str(args.shared_prefix_tokens + 64), "--max-new-tokens", "8", *extra)
            ttfts = []
            for i in range(8):
                ttfts.append(stream(server.port, server.model, system + [(11 * i + t) % 251 + 1 for t in range(32)], 8)[0])
            hits = [l for l in server.get("/metrics").splitlines() if l.startswith("lintime_prefix_cache_hits_total ")]
            record(dict(model=name, prefix_cache_mb=int(cache_mb), shared_prefix_tokens=args.shared_prefix_tokens,
                        first_request_ttft_s=round(ttfts[0], 4),
                        later_requests_ttft_mean_s=round(statistics.mean(ttfts[1:]), 4),
                        prefix_cache_hits=int(float(hits[0].split()[1])) if hits else 0))
            server.stop()
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()

"""Load test of `layerskip serve`: concurrent streaming clients on loopback for a fixed time.

Starts the server itself (a `layerskip serve` subprocess on a free loopback port, stopped at the
end) unless --url names a running loopback server. Each client streams greedy completions in a
loop; every answer must end with a finish reason, usage and [DONE], and its text must equal the
non-streamed answer to the same prompt (so nothing was lost or cut). 503s (queue full) are
counted and retried after Retry-After. Exit status 1 on any error or truncated answer.

--max-batch-size takes a list: one server per value, one after another in the same run, each
reported (with its mean batch occupancy) and their tokens/s compared with the first's.

    python benchmarks/load_test.py                       # tiny random model, 16 clients, 60 s
    python benchmarks/load_test.py --duration 10 --clients 4
    python benchmarks/load_test.py --model smollm2 --max-tokens 16 --max-batch-size 8,1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

from layerskip.model.config import ModelConfig
from layerskip.model.loading import default_model_path, load_tokenizer
from layerskip.model.saving import save_pretrained
from layerskip.model.synthetic import random_model

PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):", "1, 2, 3, 4,"]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Tally:
    ok: int = 0
    rejected_503: int = 0
    truncated: int = 0
    errors: list[str] = field(default_factory=list)
    tokens: int = 0
    latency_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    server: dict[str, float] = field(default_factory=dict)


def tiny_model(out: Path) -> Path:
    """A random 4-layer model on SmolLM2's tokenizer: real text handling, negligible compute."""
    tok = load_tokenizer(default_model_path())
    cfg = ModelConfig(vocab_size=len(tok), dim=64, n_layers=4, n_heads=4, n_kv_heads=2, intermediate_size=128,
                      max_seq_len=512, eos_token_ids=[tok.eos_token_id])
    return save_pretrained(random_model(cfg, seed=0, std=0.05), out, tok)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, extra: list[str], threads: int | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "layerskip.cli", "serve", "--model", model, "--served-model-name", "load-test",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *extra]
    env = os.environ | {"HF_HUB_OFFLINE": "1"} | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    return subprocess.Popen(cmd, env=env)


def wait_ready(url: str, server: subprocess.Popen | None, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not become ready")


def parse_stream(lines: list[str]) -> tuple[str, str | None, dict | None, bool]:
    """(text, finish_reason, usage, saw [DONE]) of an SSE completion stream."""
    text, finish, usage, done = "", None, None, False
    for line in lines:
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if data == "[DONE]":
            done = True
            continue
        chunk = json.loads(data)
        if "error" in chunk:
            raise RuntimeError(f"error event: {chunk['error']['message']}")
        for choice in chunk["choices"]:
            text += choice["text"]
            finish = choice["finish_reason"] or finish
        usage = chunk.get("usage") or usage
    return text, finish, usage, done


async def one_request(http: httpx.AsyncClient, body: dict, expected: str, tally: Tally) -> float:
    """Stream one completion and check it; returns seconds to wait before the next one."""
    start = time.perf_counter()
    first, lines = None, []
    async with http.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code == 503:
            tally.rejected_503 += 1
            return float(r.headers.get("retry-after", 1))
        if r.status_code != 200:
            tally.errors.append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
            return 0.0
        async for line in r.aiter_lines():
            first = first or time.perf_counter()
            lines.append(line)
    text, finish, usage, done = parse_stream(lines)
    if not (done and finish and usage and text == expected):
        tally.truncated += 1
        return 0.0
    tally.ok += 1
    tally.tokens += usage["completion_tokens"]
    tally.latency_s.append(time.perf_counter() - start)
    tally.ttft_s.append((first or start) - start)
    return 0.0


async def client(i: int, http: httpx.AsyncClient, bodies: list[dict], expected: list[str], deadline: float,
                 tally: Tally) -> None:
    n = i
    while time.monotonic() < deadline:
        k = n % len(bodies)
        n += 1
        try:
            pause = await one_request(http, bodies[k], expected[k], tally)
        except (httpx.HTTPError, RuntimeError, json.JSONDecodeError) as e:
            tally.errors.append(f"{type(e).__name__}: {e}")
            pause = 0.0
        await asyncio.sleep(pause)


async def run(url: str, args: argparse.Namespace) -> Tally:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.clients + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=args.timeout + 30, limits=limits) as http:
        model = (await http.get("/v1/models")).json()["data"][0]["id"]
        bodies = [{"model": model, "prompt": p, "max_tokens": args.max_tokens, "temperature": 0, "stream": True,
                   "stream_options": {"include_usage": True}} for p in PROMPTS]
        expected = []
        for b in bodies:  # the reference answers, one at a time
            r = await http.post("/v1/completions", json=b | {"stream": False})
            r.raise_for_status()
            expected.append(r.json()["choices"][0]["text"])
        tally = Tally()
        deadline = time.monotonic() + args.duration
        await asyncio.gather(*(client(i, http, bodies, expected, deadline, tally) for i in range(args.clients)))
        tally.server = server_figures((await http.get("/metrics")).text)
        return tally


def server_figures(metrics: str) -> dict[str, float]:
    """Mean generation time per request on the server (queueing excluded) and its queue depth now."""
    values = {}
    for line in metrics.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    n = values.get("layerskip_generation_duration_seconds_count", 0)
    mean = values.get("layerskip_generation_duration_seconds_sum", 0) / n if n else 0.0
    rounds = values.get("layerskip_batch_rounds_total", 0)
    occupancy = values.get("layerskip_batch_row_rounds_total", 0) / rounds if rounds else 0.0
    return {"server_generation_mean_s": round(mean, 3), "server_queue_depth_after": values["layerskip_queue_depth"],
            "mean_batch_occupancy": round(occupancy, 2)}


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else (values[0] if values else 0.0)


def report(t: Tally, args: argparse.Namespace, model: str, wall_s: float, batch: int | None) -> dict:
    return {
        "model": model, "max_batch_size": batch, "clients": args.clients, "duration_s": args.duration,
        "max_tokens": args.max_tokens,
        "max_queue": args.max_queue, "completed": t.ok, "rejected_503": t.rejected_503,
        "truncated": t.truncated, "errors": len(t.errors), "generated_tokens": t.tokens,
        "tokens_per_s": round(t.tokens / wall_s, 1), "requests_per_s": round(t.ok / wall_s, 2),
        "latency_p50_s": round(pct(t.latency_s, 50), 3), "latency_p95_s": round(pct(t.latency_s, 95), 3),
        "ttft_p50_s": round(pct(t.ttft_s, 50), 3), "ttft_p95_s": round(pct(t.ttft_s, 95), 3), **t.server,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=None, help="a running loopback server (default: start one)")
    p.add_argument("--model", default="tiny", help="'tiny' (random, SmolLM2 tokenizer), 'smollm2' or a path")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=60.0, help="seconds; no request starts after it")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--max-queue", type=int, default=8, help="the started server's queue (requests beyond get 503)")
    p.add_argument("--max-batch-size", default="8", help="the started server's batch; a list (8,1): a server each")
    p.add_argument("--strategy", default="autoregressive")
    p.add_argument("--threads", type=int, default=None, help="the started server's torch threads (OMP_NUM_THREADS)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--timeout", type=float, default=300.0,
                   help="the started server's per-request timeout; clients wait 30 s longer, so a slow answer "
                        "shows up as the server's 504, not as a client-side timeout")
    args = p.parse_args()
    if args.url is not None and urlparse(args.url).hostname not in LOOPBACK:
        raise SystemExit("--url must be a loopback address")
    if args.url is not None:
        results = [load(args, args.url, None, None)]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            model = str(tiny_model(Path(tmp))) if args.model == "tiny" else args.model
            results = [serve_and_load(args, model, int(b)) for b in args.max_batch_size.split(",")]
    first = results[0]["tokens_per_s"]
    for r in results:
        r["tokens_per_s_over_first"] = round(r["tokens_per_s"] / first, 2) if first else None
        print(json.dumps(r))
    return 1 if any(r["errors"] or r["truncated"] for r in results) else 0


def serve_and_load(args: argparse.Namespace, model: str, batch: int) -> dict:
    """Start a server with this batch size (prompts and answers here are short: a small cache), load it, stop it."""
    port = free_port()
    extra = ["--max-queue", str(args.max_queue), "--strategy", args.strategy, "--timeout", str(args.timeout),
             "--max-batch-size", str(batch), "--max-prompt-tokens", "64", "--max-tokens-limit", str(args.max_tokens)]
    extra += ["--api-key", args.api_key] if args.api_key else []
    server = start_server(model, port, extra, args.threads)
    try:
        return load(args, f"http://127.0.0.1:{port}", server, batch)
    finally:
        server.terminate()
        server.wait(30)


def load(args: argparse.Namespace, url: str, server: subprocess.Popen | None, batch: int | None) -> dict:
    wait_ready(url, server)
    start = time.perf_counter()
    tally = asyncio.run(run(url, args))
    for e in tally.errors[:10]:
        print("error:", e, file=sys.stderr)
    return report(tally, args, args.model, time.perf_counter() - start, batch)


if __name__ == "__main__":
    sys.exit(main())

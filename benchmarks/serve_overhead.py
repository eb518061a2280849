"""What the server adds to a generation: generate() in-process vs the same request through
/v1/completions (JSON and SSE), one at a time, alternating, so a shared machine's load falls on
all three alike. Prints times and the ratios server/direct; the texts must be identical.

    python benchmarks/serve_overhead.py                   # embedded SmolLM2, 32 tokens, 4 rounds
    python benchmarks/serve_overhead.py --strategy self_speculative --exit-layer 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx

from layerskip.generation.config import GenerationConfig
from layerskip.generation.generate import generate
from layerskip.model.loading import load_model
from layerskip.serve.app import create_app
from layerskip.serve.background import serving
from layerskip.serve.config import ServerConfig


def stream_text(url: str, body: dict) -> str:
    text = ""
    with httpx.stream("POST", f"{url}/v1/completions", json=body | {"stream": True}, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                text += "".join(c["text"] for c in json.loads(line[6:])["choices"])
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--prompt", default="Write a short story about a robot who learns to paint.")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--strategy", default="autoregressive")
    p.add_argument("--exit-layer", type=int, default=None)
    args = p.parse_args()

    loaded = load_model(args.model)
    cfg = GenerationConfig(strategy=args.strategy, exit_layer=args.exit_layer, max_new_tokens=args.max_tokens,
                           ignore_eos=True)
    body = {"model": "m", "prompt": args.prompt, "max_tokens": args.max_tokens, "temperature": 0}
    times: dict[str, list[float]] = {"direct": [], "json": [], "sse": []}
    with serving(create_app(loaded, ServerConfig(served_model_name="m", generation=cfg))) as url:
        want = generate(loaded, args.prompt, cfg).text  # warm-up
        for _ in range(args.rounds):
            t = time.perf_counter()
            texts = [generate(loaded, args.prompt, cfg).text]
            times["direct"].append(time.perf_counter() - t)
            t = time.perf_counter()
            texts.append(httpx.post(f"{url}/v1/completions", json=body, timeout=600).json()["choices"][0]["text"])
            times["json"].append(time.perf_counter() - t)
            t = time.perf_counter()
            texts.append(stream_text(url, body))
            times["sse"].append(time.perf_counter() - t)
            assert texts == [want] * 3, "the server's answer differs from generate()"
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "model": loaded.name, "strategy": args.strategy, "max_tokens": args.max_tokens, "rounds": args.rounds,
        **{f"{k}_s": [round(x, 3) for x in v] for k, v in times.items()},
        "json_over_direct": round(med["json"] / med["direct"], 3),
        "sse_over_direct": round(med["sse"] / med["direct"], 3),
    }))


if __name__ == "__main__":
    main()

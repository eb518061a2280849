"""Self-speculation on Gemma 3 270M over E x k x draft vocabulary, against autoregressive decoding.

    python benchmarks/gemma_sweep.py --dtype bfloat16 --checkpoint /tmp/gemma_sweep.jsonl
    python benchmarks/gemma_sweep.py --compare-ar-dtypes      # AR in float32 and bfloat16, interleaved
    python benchmarks/gemma_sweep.py --dtype bfloat16 --held-out --cells 17:3:8192,17:2:8192

Each cell decodes every prompt greedily (EOS ignored, so every run yields the same number of
tokens) and must reproduce the autoregressive tokens exactly (asserted). Speed is tokens per
second of process CPU time, prefill included: on a machine shared with other jobs, CPU time of a
one-thread run is far steadier than wall time, which is recorded too. Autoregressive decoding is
measured again between cells, and each cell is compared with the median of its neighbours.
Finished cells go to a JSON-lines checkpoint, so a killed run resumes where it stopped; the
most promising cells (deep exits) run first. Draft vocabularies use the shipped ranking.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from layerskip import GenerationConfig, generate_ids, load_model
from layerskip.model.packaged import GEMMA3_270M_RANKING

# Completions of code and chat-like text (a base model: no chat template). Tuning and held-out sets
# are disjoint; neither comes from the ranking's corpus.
TUNING = [
    "def merge_sorted(a, b):\n    \"\"\"Merge two sorted lists into one sorted list.\"\"\"\n",
    "import json\n\n\ndef load_config(path):\n",
    "User: How do I reverse a list in Python?\nAssistant:",
]
HELD_OUT = [
    "class Stack:\n    \"\"\"A last-in, first-out stack.\"\"\"\n\n    def __init__(self):\n",
    "def parse_args():\n    parser = argparse.ArgumentParser(",
    "User: What is the difference between a tuple and a list?\nAssistant:",
]
FULL = 0  # draft vocabulary "full": the model's own head


def run(lm, prompts: list[list[int]], cfg: GenerationConfig) -> dict:
    """Decode every prompt; CPU and wall seconds, tokens, acceptance, and the token ids."""
    generate_ids(lm, prompts[0], replace(cfg, max_new_tokens=2))  # warm-up
    cpu = wall = 0.0
    ids, drafted, accepted = [], 0, 0
    for p in prompts:
        c0, w0 = time.process_time(), time.perf_counter()
        r = generate_ids(lm, p, cfg)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        ids.append(r.token_ids)
        drafted += r.stats.num_drafted
        accepted += r.stats.num_accepted
    tokens = sum(len(t) for t in ids)
    return {"cpu_s": cpu, "wall_s": wall, "tokens": tokens, "tok_per_cpu_s": tokens / cpu,
            "acceptance": accepted / drafted if drafted else None, "ids": ids}


def config(cell: tuple[int, int, int] | None, new_tokens: int) -> GenerationConfig:
    base = dict(max_new_tokens=new_tokens, ignore_eos=True)
    if cell is None:
        return GenerationConfig(**base)
    e, k, vocab = cell
    extra = {} if vocab == FULL else dict(draft_vocab_size=vocab, draft_vocab_file=str(GEMMA3_270M_RANKING))
    return GenerationConfig(strategy="self_speculative", exit_layer=e, num_speculations=k, **base, **extra)


def parse_cells(args: argparse.Namespace) -> list[tuple[int, int, int]]:
    if args.cells:
        return [tuple(int(x) for x in c.split(":")) for c in args.cells.split(",")]  # type: ignore[misc]
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    return [(e, k, v) for e in sorted(ints(args.exits), reverse=True) for v in ints(args.vocabs) for k in ints(args.ks)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--exits", default="17,16,15,14,13")
    p.add_argument("--ks", default="1,2,3,4")
    p.add_argument("--vocabs", default="8192,16384,4096,32768,0", help="0: the full head")
    p.add_argument("--cells", default=None, help="E:k:vocab,... instead of the grid")
    p.add_argument("--new-tokens", type=int, default=40)
    p.add_argument("--ar-every", type=int, default=4, help="autoregressive run after every N cells")
    p.add_argument("--held-out", action="store_true", help="the held-out prompts instead of the tuning ones")
    p.add_argument("--checkpoint", type=Path, default=Path("/tmp/gemma_sweep.jsonl"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compare-ar-dtypes", action="store_true", help="only AR, float32 vs bfloat16, 3 rounds")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.compare_ar_dtypes:
        compare_ar_dtypes(args.new_tokens)
        return
    lm = load_model("gemma3-270m", dtype=args.dtype)
    texts = HELD_OUT if args.held_out else TUNING
    prompts = [lm.tokenizer(t).input_ids for t in texts]
    key = {"dtype": args.dtype, "held_out": args.held_out, "new_tokens": args.new_tokens}
    done = []
    if args.checkpoint.is_file():
        done = [json.loads(line) for line in args.checkpoint.read_text().splitlines() if line.strip()]
        done = [d for d in done if all(d[k] == v for k, v in key.items())]
    seen = {tuple(d["cell"]) for d in done if d["cell"]}
    ar = next((d for d in done if d["cell"] is None), None)

    def record(cell: tuple[int, int, int] | None) -> dict:
        row = {**key, "cell": cell, **run(lm, prompts, config(cell, args.new_tokens)), "time": time.time()}
        if ar is not None and cell is not None:
            assert row["ids"] == ar["ids"], f"self-speculation {cell} differs from autoregressive"
        with args.checkpoint.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
        print({k: row[k] for k in ("cell", "tok_per_cpu_s", "wall_s", "acceptance")}, flush=True)
        return row

    if ar is None:
        ar = record(None)
    todo = [c for c in parse_cells(args) if c not in seen]
    for i, cell in enumerate(todo):
        record(cell)
        if (i + 1) % args.ar_every == 0 or i == len(todo) - 1:
            record(None)
    print_table(done)


def compare_ar_dtypes(new_tokens: int, rounds: int = 3) -> None:
    """Autoregressive decoding in float32 and bfloat16, both models loaded, interleaved by round."""
    lms = {d: load_model("gemma3-270m", dtype=d) for d in ("float32", "bfloat16")}
    prompts = [lms["float32"].tokenizer(t).input_ids for t in TUNING]
    speeds: dict[str, list[float]] = {d: [] for d in lms}
    for i in range(rounds):
        for d in list(lms)[i % 2:] + list(lms)[: i % 2]:
            speeds[d].append(run(lms[d], prompts, config(None, new_tokens))["tok_per_cpu_s"])
    for d, v in speeds.items():
        print(f"AR {d}: median {statistics.median(v):.2f} tok/cpu-s over {rounds} rounds {[round(x, 2) for x in v]}")


def print_table(rows: list[dict]) -> None:
    """Each cell against the median of the autoregressive runs nearest in time (up to 3)."""
    ars = [r for r in rows if r["cell"] is None]
    print(f"{'E':>3} {'k':>2} {'vocab':>6} {'tok/cpu-s':>10} {'AR':>6} {'speedup':>8} {'accept':>7}")
    for r in sorted((r for r in rows if r["cell"]), key=lambda r: tuple(r["cell"])):
        near = sorted(ars, key=lambda a: abs(a["time"] - r["time"]))[:3]
        base = statistics.median(a["tok_per_cpu_s"] for a in near)
        e, k, v = r["cell"]
        print(f"{e:>3} {k:>2} {v or 'full':>6} {r['tok_per_cpu_s']:>10.2f} {base:>6.2f} "
              f"{r['tok_per_cpu_s'] / base:>7.2f}x {r['acceptance']:>7.2f}")


if __name__ == "__main__":
    main()

"""Adaptive drafting against fixed k, on SmolLM2 as it is and on its perfect-draft variant.

    python benchmarks/adaptive.py                       # E = 8, k = 6, 64 new tokens, 3 prompts
    python benchmarks/adaptive.py --exit-layer 12 --new-tokens 128

Configurations are interleaved prompt by prompt in one process; each row reports tokens/s summed over
all prompts and rounds, the ratio to autoregressive measured alongside, the
acceptance rate and the mean accepted length. Greedy outputs are checked equal to autoregressive.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import replace

import torch

from layerskip import GenerationConfig, generate_ids, load_model
from layerskip.model.synthetic import silence_layers

PROMPTS = ["def fibonacci(n):", "The history of the Roman Empire", "import os\n\ndef list_files(path):"]


def configs(exit_layer: int, k: int) -> dict[str, dict]:
    spec = dict(strategy="self_speculative", exit_layer=exit_layer, num_speculations=k)
    return {
        "autoregressive": {},
        f"self-spec k={k}": spec,
        "+ threshold 0.5": spec | {"draft_confidence_threshold": 0.5},
        "+ adaptive k": spec | {"adaptive_k": True},
        "+ both": spec | {"draft_confidence_threshold": 0.5, "adaptive_k": True},
    }


def measure(lm, settings: dict[str, dict], new_tokens: int, rounds: int) -> dict[str, dict]:
    stats: dict[str, list] = {name: [0, 0, 0] for name in settings}
    for _ in range(rounds):
        for prompt in PROMPTS:
            ids = lm.tokenizer(prompt).input_ids
            reference = None
            for name, kw in settings.items():
                cfg = GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True, **kw)
                r = generate_ids(lm, ids, cfg)
                reference = reference or r.token_ids
                assert r.token_ids == reference, f"{name} differs from autoregressive on {prompt!r}"
                stats[name][0] += r.total_time_s
                stats[name][1] += r.stats.num_accepted
                stats[name][2] += r.stats.num_drafted
    return {name: {"time": t, "accepted": a, "drafted": d} for name, (t, a, d) in stats.items()}


def report(title: str, results: dict[str, dict], tokens: int) -> None:
    base = results["autoregressive"]["time"]
    print(f"\n{title}\n{'configuration':<20} {'tok/s':>7} {'vs AR':>6} {'acceptance':>10}")
    for name, r in results.items():
        acc = f"{r['accepted'] / r['drafted']:.1%}" if r["drafted"] else "-"
        print(f"{name:<20} {tokens / r['time']:>7.1f} {base / r['time']:>5.2f}x {acc:>10}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exit-layer", type=int, default=8)
    p.add_argument("--num-speculations", type=int, default=6)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model()
    perfect = replace(lm, model=silence_layers(copy.deepcopy(lm.model), args.exit_layer))
    settings = configs(args.exit_layer, args.num_speculations)
    tokens = args.new_tokens * len(PROMPTS) * args.rounds
    for title, model in [("SmolLM2-135M as it is", lm), ("perfect-draft (layers >= E silenced)", perfect)]:
        report(f"{title}, E={args.exit_layer}", measure(model, settings, args.new_tokens, args.rounds), tokens)


if __name__ == "__main__":
    main()

"""Effect of the reduced-vocabulary draft head on acceptance and speed, in one run.

    python benchmarks/draft_vocab.py                   # SmolLM2-135M, E=8, k=6, 64 new tokens
    python benchmarks/draft_vocab.py --sizes 4096 8192 --new-tokens 128

Two rankings: the tokenizer's id order (BPE merge order, no corpus needed) and token counts over
a corpus of text found offline (Python's standard library sources, English and code). Two models:
SmolLM2 as it is (not trained for early exit: low acceptance) and the perfect-draft copy (layers
8..29 silenced: 100 % acceptance with the full head), so the only loss of acceptance left is a
token outside the subset. Every configuration must produce the same tokens as the full head.
"""

from __future__ import annotations

import argparse
import copy
import sysconfig
import time
from dataclasses import replace
from pathlib import Path

import torch

from layerskip import GenerationConfig, generate_ids, load_model
from layerskip.generation.draft_vocab import rank_tokens, write_ranking
from layerskip.model.synthetic import silence_layers

PROMPTS = ["def fibonacci(n):", "The capital of France is", "Once upon a time, there was"]
EXIT, K = 8, 6


def stdlib_corpus(max_files: int) -> list[str]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:max_files]
    return [f.read_text(errors="ignore") for f in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16384, 8192, 4096, 1024])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--corpus-files", type=int, default=60)
    ap.add_argument("--ranking-out", default="/tmp/layerskip_draft_ranking.json")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    lm = load_model()
    ranking = rank_tokens(lm.tokenizer, stdlib_corpus(args.corpus_files))
    write_ranking(args.ranking_out, ranking)
    models = {"smollm2": lm, "perfect-draft": replace(lm, model=silence_layers(copy.deepcopy(lm.model), EXIT))}
    prompts = [lm.tokenizer(p).input_ids for p in PROMPTS]
    base = dict(strategy="self_speculative", exit_layer=EXIT, num_speculations=K, max_new_tokens=args.new_tokens,
                ignore_eos=True)
    heads = {"full head": {}}
    for size in args.sizes:
        heads[f"{size} by id"] = {"draft_vocab_size": size}
        heads[f"{size} by corpus"] = {"draft_vocab_size": size, "draft_vocab_file": args.ranking_out}
    print(f"# draft vocabulary: E={EXIT}, k={K}, {args.new_tokens} new tokens x {len(prompts)} prompts, "
          f"{torch.get_num_threads()} threads, corpus ranking over {len(ranking)} distinct tokens")
    for model_name, m in models.items():
        results: dict[str, list] = {}
        for _ in range(args.rounds):
            for head, kw in heads.items():
                cfg = GenerationConfig(**base, **kw)
                t0 = time.perf_counter()
                res = [generate_ids(m, ids, cfg) for ids in prompts]
                tps = args.new_tokens * len(prompts) / (time.perf_counter() - t0)
                prev = results.get(head)
                if prev is None or tps > prev[0]:
                    results[head] = [tps, res]
        full_tokens = [r.token_ids for r in results["full head"][1]]
        print(f"\n### {model_name}\n\n| draft head | tok/s | vs full | acceptance | draft ms / drafted token | "
              "same tokens |\n|---|---|---|---|---|---|")
        for head, (tps, res) in results.items():
            drafted = sum(r.stats.num_drafted for r in res)
            accepted = sum(r.stats.num_accepted for r in res)
            draft_ms = 1e3 * sum(r.stats.draft_time_s for r in res) / max(drafted, 1)
            same = [r.token_ids for r in res] == full_tokens
            print(f"| {head} | {tps:.1f} | {tps / results['full head'][0]:.2f}x | {accepted / max(drafted, 1):.1%} "
                  f"| {draft_ms:.2f} | {same} |")


if __name__ == "__main__":
    main()

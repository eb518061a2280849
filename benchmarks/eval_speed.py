"""Speed of the lm-eval model `layerskip`, as ratios of two settings measured side by side.

scoring: log-likelihoods of the `layerskip_mc` choices, batch size 1 against --batch-size.
generation: self-speculative against autoregressive `generate_until` on the `layerskip_gen`
prompts; greedy answers must be identical. With --perfect-draft the layers from E on are
silenced (acceptance 100 %): the speed-up a well-trained LayerSkip model can approach.

The two settings alternate (which goes first flips every round), so load from other processes
on a shared machine falls on both alike; only the ratio is meaningful there.

    python benchmarks/eval_speed.py scoring --batch-size 8
    python benchmarks/eval_speed.py generation --exit-layer 8 --num-speculations 3
    python benchmarks/eval_speed.py generation --exit-layer 8 --num-speculations 6 --perfect-draft
"""

from __future__ import annotations

import argparse
import json
import time

from lm_eval.api.instance import Instance

from layerskip.eval.harness import TASKS_DIR
from layerskip.eval.lm import LayerSkipLM
from layerskip.eval.stats import generation_figures
from layerskip.generation.output import GenerationTotals
from layerskip.model.loaded import LoadedModel
from layerskip.model.loading import load_model
from layerskip.model.synthetic import silence_layers


def _rows(name: str) -> list[dict]:
    return [json.loads(x) for x in (TASKS_DIR / name).read_text().splitlines() if x.strip()]


def scoring(loaded: LoadedModel, args: argparse.Namespace) -> None:
    requests = [
        Instance("loglikelihood", {}, (f"Question: {r['question']}\nAnswer:", " " + c), i)
        for i, r in enumerate(_rows("layerskip_mc.jsonl")) for c in r["choices"]
    ]
    models = {1: LayerSkipLM(loaded, batch_size=1), args.batch_size: LayerSkipLM(loaded, batch_size=args.batch_size)}
    seconds = dict.fromkeys(models, 0.0)
    for r in range(args.rounds):
        for size in sorted(models, reverse=r % 2 == 1):
            start = time.perf_counter()
            models[size].loglikelihood(requests, disable_tqdm=True)
            seconds[size] += time.perf_counter() - start
    print(f"{len(requests)} loglikelihood requests x {args.rounds} rounds: batch size 1 {seconds[1]:.1f} s, "
          f"batch size {args.batch_size} {seconds[args.batch_size]:.1f} s")
    print(f"speed ratio batch {args.batch_size} / batch 1: {seconds[1] / seconds[args.batch_size]:.2f}")


def generation(loaded: LoadedModel, args: argparse.Namespace) -> None:
    if args.perfect_draft:
        silence_layers(loaded.model, args.exit_layer)
    ar = LayerSkipLM(loaded)
    spec = LayerSkipLM(loaded, strategy="self_speculative", exit_layer=args.exit_layer,
                       num_speculations=args.num_speculations)
    kwargs = {"until": [], "max_gen_toks": args.max_gen_toks, "do_sample": False}
    rows = _rows("layerskip_gen.jsonl")
    requests = [Instance("generate_until", {}, (r["prompt"], kwargs), i) for i, r in enumerate(rows)]
    ar.generate_until(requests[:1], disable_tqdm=True)  # warm-up, then count afresh
    spec.generate_until(requests[:1], disable_tqdm=True)
    ar.totals, spec.totals = GenerationTotals(), GenerationTotals()
    mismatches = 0
    for r in range(args.rounds):
        for i, req in enumerate(requests):
            order = (ar, spec) if (i + r) % 2 == 0 else (spec, ar)
            first, second = (lm.generate_until([req], disable_tqdm=True)[0] for lm in order)
            mismatches += first != second
    a, s = generation_figures(ar.totals), generation_figures(spec.totals)
    print(f"model {loaded.name}{' (perfect draft)' if args.perfect_draft else ''}, E={args.exit_layer}, "
          f"k={args.num_speculations}, {s['requests']} requests, {s['new_tokens']} tokens each strategy")
    print(f"autoregressive   {a['tokens_per_second']:.2f} tok/s")
    print(f"self-speculative {s['tokens_per_second']:.2f} tok/s, acceptance {s['acceptance_rate']:.1%}, "
          f"mean accepted length {s['mean_accepted_length']:.2f}")
    print(f"speed ratio self-speculative / autoregressive: {s['tokens_per_second'] / a['tokens_per_second']:.2f}")
    print(f"greedy answers that differ: {mismatches}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["scoring", "generation"])
    p.add_argument("--model", default=None)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--exit-layer", type=int, default=8)
    p.add_argument("--num-speculations", type=int, default=3)
    p.add_argument("--max-gen-toks", type=int, default=16)
    p.add_argument("--perfect-draft", action="store_true", help="silence layers >= exit layer")
    args = p.parse_args()
    {"scoring": scoring, "generation": generation}[args.what](load_model(args.model), args)


if __name__ == "__main__":
    main()

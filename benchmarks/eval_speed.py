"""Self-speculative vs autoregressive `generate_until` through the lm-eval model `layerskip`.

The two strategies run request by request, alternating which goes first, so load from other
processes on a shared machine falls on both alike; only their ratio is printed as a result.
Greedy answers must be identical. With --perfect-draft the layers from E on are silenced
(acceptance 100 %): the speed-up a well-trained LayerSkip model can approach.

    python benchmarks/eval_speed.py --exit-layer 8 --num-speculations 3
    python benchmarks/eval_speed.py --exit-layer 8 --num-speculations 6 --perfect-draft
"""

from __future__ import annotations

import argparse
import json

from lm_eval.api.instance import Instance

from layerskip.eval.harness import TASKS_DIR
from layerskip.eval.lm import LayerSkipLM
from layerskip.eval.stats import GenerationTotals
from layerskip.model.loading import load_model
from layerskip.model.synthetic import silence_layers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--exit-layer", type=int, default=8)
    p.add_argument("--num-speculations", type=int, default=3)
    p.add_argument("--max-gen-toks", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--perfect-draft", action="store_true", help="silence layers >= exit layer")
    args = p.parse_args()

    loaded = load_model(args.model)
    if args.perfect_draft:
        silence_layers(loaded.model, args.exit_layer)
    ar = LayerSkipLM(loaded)
    spec = LayerSkipLM(loaded, strategy="self_speculative", exit_layer=args.exit_layer,
                       num_speculations=args.num_speculations)
    rows = [json.loads(x) for x in (TASKS_DIR / "layerskip_gen.jsonl").read_text().splitlines()]
    kwargs = {"until": [], "max_gen_toks": args.max_gen_toks, "do_sample": False}
    requests = [Instance("generate_until", {}, (r["prompt"], kwargs), i) for i, r in enumerate(rows)]

    ar.generate_until(requests[:1], disable_tqdm=True)  # warm-up, then start the counts afresh
    spec.generate_until(requests[:1], disable_tqdm=True)
    ar.totals, spec.totals = GenerationTotals(), GenerationTotals()
    mismatches = 0
    for r in range(args.rounds):
        for i, req in enumerate(requests):
            order = (ar, spec) if (i + r) % 2 == 0 else (spec, ar)
            a, b = (lm.generate_until([req], disable_tqdm=True)[0] for lm in order)
            mismatches += a != b
    a, s = ar.totals.to_dict(), spec.totals.to_dict()
    print(f"model {loaded.name}{' (perfect draft)' if args.perfect_draft else ''}, E={args.exit_layer}, "
          f"k={args.num_speculations}, {s['requests']} requests, {s['new_tokens']} tokens each strategy")
    print(f"autoregressive   {a['tokens_per_second']:.2f} tok/s")
    print(f"self-speculative {s['tokens_per_second']:.2f} tok/s, acceptance {s['acceptance_rate']:.1%}, "
          f"mean accepted length {s['mean_accepted_length']:.2f}")
    print(f"speed ratio self-speculative / autoregressive: {s['tokens_per_second'] / a['tokens_per_second']:.2f}")
    print(f"greedy answers that differ: {mismatches}")


if __name__ == "__main__":
    main()

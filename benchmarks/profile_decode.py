"""Where a decode step's time goes: torch.profiler's top operators over one greedy generation.

    python benchmarks/profile_decode.py --dtype float32
    python benchmarks/profile_decode.py --dtype int4 --strategy self_speculative --perfect-draft
"""

from __future__ import annotations

import argparse

from torch.profiler import ProfilerActivity, profile

from layerskip import GenerationConfig, generate_ids, load_model
from layerskip.model.synthetic import silence_layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="float32", help="float32, bfloat16, int8 or int4")
    ap.add_argument("--strategy", default="autoregressive")
    ap.add_argument("--perfect-draft", action="store_true", help="silence layers 8.. first (before quantising)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rows", type=int, default=12)
    args = ap.parse_args()
    quant = args.dtype in ("int8", "int4")
    lm = load_model(dtype="float32" if quant and args.perfect_draft else args.dtype)
    if args.perfect_draft:
        silence_layers(lm.model, 8)
        if quant:
            from layerskip.model.quantize import quantize

            quantize(lm.model, args.dtype)
    extra = dict(exit_layer=8, num_speculations=6) if args.strategy == "self_speculative" else {}
    cfg = GenerationConfig(strategy=args.strategy, max_new_tokens=args.new_tokens, ignore_eos=True, **extra)
    ids = lm.tokenizer("def fibonacci(n):").input_ids
    generate_ids(lm, ids, cfg)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        res = generate_ids(lm, ids, cfg)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    print(f"{args.dtype} {args.strategy}: {res.decode_tokens_per_second:.1f} tok/s (under the profiler), "
          f"{total / 1e3 / res.num_new_tokens:.2f} ms of operator time per token")
    print("| operator | share of operator time | calls per token |\n|---|---|---|")
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[: args.rows]:
        print(f"| {e.key} | {e.self_cpu_time_total / total:.1%} | {e.count / res.num_new_tokens:.1f} |")


if __name__ == "__main__":
    main()

"""Where a decode step's time goes: torch.profiler's top operators over one greedy generation.

    python benchmarks/profile_decode.py --dtype float32
    python benchmarks/profile_decode.py --dtype int4 --strategy self_speculative --perfect-draft
    python benchmarks/profile_decode.py --batch-size 8 --shapes --threads 1   # batched, by operand shape
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from layerskip import GenerationConfig, load_model
from layerskip.bench.data import load_dataset
from layerskip.generation.batch import generate_batch_ids
from layerskip.model.synthetic import silence_layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="float32", help="float32, bfloat16, int8 or int4")
    ap.add_argument("--strategy", default="autoregressive")
    ap.add_argument("--perfect-draft", action="store_true", help="silence layers 8.. first (before quantising)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1, help="B rows decoding together (the first B qa prompts)")
    ap.add_argument("--shapes", action="store_true", help="one line per operator and operand shapes")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rows", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    quant = args.dtype in ("int8", "int4")
    lm = load_model(dtype="float32" if quant and args.perfect_draft else args.dtype)
    if args.perfect_draft:
        silence_layers(lm.model, 8)
        if quant:
            from layerskip.model.quantize import quantize

            quantize(lm.model, args.dtype)
    extra = dict(exit_layer=8, num_speculations=6) if args.strategy == "self_speculative" else {}
    cfg = GenerationConfig(strategy=args.strategy, max_new_tokens=args.new_tokens, ignore_eos=True, **extra)
    if args.batch_size == 1:
        prompts = [lm.tokenizer("def fibonacci(n):").input_ids]
    else:
        prompts = [lm.tokenizer(e.prompt).input_ids for e in load_dataset("qa", num_samples=args.batch_size).examples]
    generate_batch_ids(lm, prompts, cfg)  # warm-up (and the weights laid out for this many rows)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        results = generate_batch_ids(lm, prompts, cfg)
    steps = results[0].num_new_tokens
    averages = prof.key_averages(group_by_input_shape=args.shapes)
    total = sum(e.self_cpu_time_total for e in averages)
    tps = sum(r.num_new_tokens for r in results) / max(r.total_time_s for r in results)
    print(f"{args.dtype} {args.strategy}, batch {len(prompts)}: {tps:.1f} tok/s (under the profiler), "
          f"{total / 1e3 / steps:.2f} ms of operator time per step (prefills included)")
    shape = " | operand shapes" if args.shapes else ""
    print(f"| operator{shape} | share of operator time | calls per step |\n|---|---{'|---' if shape else ''}|---|")
    for e in sorted(averages, key=lambda e: -e.self_cpu_time_total)[: args.rows]:
        shapes = f" | {e.input_shapes}" if args.shapes else ""
        print(f"| {e.key}{shapes} | {e.self_cpu_time_total / total:.1%} | {e.count / steps:.1f} |")


if __name__ == "__main__":
    main()

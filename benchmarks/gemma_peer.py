"""Gemma 3 270M: our AR and self-speculation beside HF transformers `generate` and HF's
`assistant_early_exit`, on the same GGUF, dtype and held-out prompts, in one run.

    python benchmarks/gemma_peer.py --dtype float32 --cells 17:3:8192 --new-tokens 64 --rounds 2

Every arm decodes every prompt greedily to exactly --new-tokens tokens (EOS ignored; HF with
min_new_tokens), in an order rotated per prompt and round. Reported: tokens per CPU-second (one
thread; steadier than wall time on a shared machine) and per wall-second, prefill included. Our
self-speculation must reproduce our AR tokens (asserted); whether HF's early-exit assistant
reproduces HF's AR, and ours HF's, is counted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from gemma_sweep import HELD_OUT, config  # the sweep's held-out prompts and its configs
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from layerskip import generate_ids, load_model
from layerskip.model.loading import DTYPES


def hf_arm(hf, new: int, exit_layer: int | None, k: int) -> Callable[[list[int]], list[int]]:
    kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    if exit_layer is not None:
        kwargs |= dict(assistant_early_exit=exit_layer, num_assistant_tokens=k,
                       num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0)

    def run(ids: list[int]) -> list[int]:
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = hf.generate(x, attention_mask=torch.ones_like(x), **kwargs)
        return out[0, len(ids):].tolist()
    return run


def ours_arm(lm, new: int, cell: tuple[int, int, int] | None) -> Callable[[list[int]], list[int]]:
    cfg = config(cell, new)
    return lambda ids: generate_ids(lm, ids, cfg).token_ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--cells", default="17:3:8192", help="our self-speculative settings E:k:vocab (0: full head)")
    p.add_argument("--hf-exit", default="17:3", help="HF assistant_early_exit E:k")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    ours = load_model("gemma3-270m", dtype=args.dtype)
    path = ours.path
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=DTYPES[args.dtype]).eval()
    prompts = [ours.tokenizer(t).input_ids for t in HELD_OUT]
    he, hk = (int(x) for x in args.hf_exit.split(":"))
    new = args.new_tokens
    arms = {"HF generate AR": hf_arm(hf, new, None, hk), "ours AR": ours_arm(ours, new, None),
            f"HF assistant_early_exit E={he} k={hk}": hf_arm(hf, new, he, hk)}
    for c in args.cells.split(","):
        cell = tuple(int(x) for x in c.split(":"))
        arms[f"ours self-spec E={cell[0]} k={cell[1]} vocab={cell[2] or 'full'}"] = ours_arm(ours, new, cell)
    names = list(arms)
    for name in names:  # warm-up
        arms[name](prompts[0][:8])
    cpu = dict.fromkeys(names, 0.0)
    wall = dict.fromkeys(names, 0.0)
    tokens = dict.fromkeys(names, 0)
    same = {"HF early exit == HF AR": 0, "ours AR == HF AR": 0}
    runs = 0
    for r in range(args.rounds):
        for i, ids in enumerate(prompts):
            shift = (r * len(prompts) + i) % len(names)
            got = {}
            for name in names[shift:] + names[:shift]:
                c0, w0 = time.process_time(), time.perf_counter()
                got[name] = arms[name](ids)
                cpu[name] += time.process_time() - c0
                wall[name] += time.perf_counter() - w0
                tokens[name] += len(got[name])
            ar = got["ours AR"]
            for name in names[3:]:
                assert got[name] == ar, f"{name} differs from our AR on a held-out prompt"
            same["HF early exit == HF AR"] += got[names[2]] == got[names[0]]
            same["ours AR == HF AR"] += ar == got[names[0]]
            runs += 1
    print(f"{len(prompts)} held-out prompts x {args.rounds} rounds x {new} tokens, {args.dtype}, "
          f"{torch.get_num_threads()} thread(s)")
    base = tokens[names[1]] / cpu[names[1]]
    print(f"{'arm':<44} {'tok/cpu-s':>9} {'tok/wall-s':>10} {'vs our AR':>9}")
    for n in names:
        rate = tokens[n] / cpu[n]
        print(f"{n:<44} {rate:>9.2f} {tokens[n] / wall[n]:>10.2f} {rate / base:>8.2f}x")
    print("identical greedy outputs: " + ", ".join(f"{k} {v}/{runs}" for k, v in same.items())
          + f"; our self-spec == our AR {runs}/{runs} (asserted)")


if __name__ == "__main__":
    main()

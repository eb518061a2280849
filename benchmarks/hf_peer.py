"""Our engine beside HF transformers on the same model, prompts, dtype, E and k, in one run.

    python benchmarks/hf_peer.py --exit-layer 8 --num-speculations 4 --max-new-tokens 32 --threads 1

Four arms per prompt, interleaved in a rotating order: HF `generate` autoregressive, ours
autoregressive, HF `generate(..., assistant_early_exit=E, num_assistant_tokens=k)` (HF's LayerSkip
path: the model drafts with its first E layers), and our self-speculative decoding. Both engines load
the same GGUF (the embedded SmolLM2 by default), decode greedily and stop at EOS or
--max-new-tokens. This runs twice: on the model as it is (not trained with LayerSkip, so
self-speculation should lose) and on its perfect-draft variant (layers >= --perfect-draft-from
silenced in both engines, so every draft is accepted). Prints tokens/s (prefill included) and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from layerskip.bench.data import load_dataset
from layerskip.generation.config import GenerationConfig
from layerskip.generation.generate import generate_ids
from layerskip.model.loading import DTYPES, load_model
from layerskip.model.synthetic import silence_layers


@dataclass
class Timing:
    tokens: int
    seconds: float
    ids: list[int]


def hf_generate(model, ids: list[int], new: int, exit_layer: int | None, k: int) -> Timing:
    x = torch.tensor([ids])
    kwargs = dict(max_new_tokens=new, do_sample=False, pad_token_id=0)
    if exit_layer is not None:
        kwargs |= dict(assistant_early_exit=exit_layer, num_assistant_tokens=k,
                       num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(x, attention_mask=torch.ones_like(x), **kwargs)
    seconds = time.perf_counter() - t0
    new_ids = out[0, len(ids):].tolist()
    return Timing(len(new_ids), seconds, new_ids)


def ours_generate(loaded, ids: list[int], new: int, exit_layer: int | None, k: int) -> Timing:
    strategy = "autoregressive" if exit_layer is None else "self_speculative"
    cfg = GenerationConfig(strategy=strategy, exit_layer=exit_layer, num_speculations=k, max_new_tokens=new)
    t0 = time.perf_counter()
    r = generate_ids(loaded, ids, cfg)
    return Timing(r.num_new_tokens, time.perf_counter() - t0, r.token_ids)


def silence_hf(model, from_layer: int) -> None:
    """The same surgery as layerskip.model.synthetic.silence_layers, on HF's module names."""
    with torch.no_grad():
        for layer in model.model.layers[from_layer:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()


def run_variant(title: str, hf, ours, prompts: list[list[int]], args: argparse.Namespace) -> None:
    e, k, new = args.exit_layer, args.num_speculations, args.max_new_tokens
    arms = {
        "HF autoregressive": lambda ids: hf_generate(hf, ids, new, None, k),
        "ours autoregressive": lambda ids: ours_generate(ours, ids, new, None, k),
        f"HF assistant_early_exit={e} k={k}": lambda ids: hf_generate(hf, ids, new, e, k),
        f"ours self_speculative E={e} k={k}": lambda ids: ours_generate(ours, ids, new, e, k),
    }
    names = list(arms)
    for name in names:  # warm-up
        arms[name](prompts[0][:8])
    tokens = dict.fromkeys(names, 0)
    seconds = dict.fromkeys(names, 0.0)
    ratios: dict[str, list[float]] = {"ours/HF autoregressive": [], "ours/HF speculative": []}
    same = {"ours AR == HF AR": 0, "ours self-spec == ours AR": 0, "HF early-exit == HF AR": 0}
    for i, ids in enumerate(prompts):
        order = names[i % 4 :] + names[: i % 4]
        got = {name: arms[name](ids) for name in order}
        for name, t in got.items():
            tokens[name] += t.tokens
            seconds[name] += t.seconds
        hf_ar, our_ar, hf_sp, our_sp = (got[n] for n in names)
        ratios["ours/HF autoregressive"].append(hf_ar.seconds / our_ar.seconds)
        ratios["ours/HF speculative"].append(hf_sp.seconds / our_sp.seconds)
        for key, (a, b) in zip(same, [(our_ar, hf_ar), (our_sp, our_ar), (hf_sp, hf_ar)]):
            same[key] += a.ids == b.ids
    rate = {n: tokens[n] / seconds[n] for n in names}
    print(f"\n== {title}: {len(prompts)} prompts x {new} new tokens, dtype {args.dtype}, "
          f"{torch.get_num_threads()} thread(s)")
    for n in names:
        print(f"  {n:40s} {rate[n]:7.2f} tok/s")
    print(f"  ours / HF, autoregressive: {rate[names[1]] / rate[names[0]]:.2f}x "
          f"(median per prompt {statistics.median(ratios['ours/HF autoregressive']):.2f}x)")
    print(f"  ours / HF, speculative:    {rate[names[3]] / rate[names[2]]:.2f}x "
          f"(median per prompt {statistics.median(ratios['ours/HF speculative']):.2f}x)")
    print(f"  speculative / autoregressive: HF {rate[names[2]] / rate[names[0]]:.2f}x, "
          f"ours {rate[names[3]] / rate[names[1]]:.2f}x")
    print("  identical greedy outputs: " + ", ".join(f"{k} {v}/{len(prompts)}" for k, v in same.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a .gguf file (default: the embedded SmolLM2)")
    p.add_argument("--dataset", default="code")
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--exit-layer", type=int, default=8)
    p.add_argument("--num-speculations", type=int, default=4)
    p.add_argument("--perfect-draft-from", type=int, default=8)
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    ours = load_model(args.model, args.dtype)
    path = Path(ours.path)
    if path.suffix != ".gguf":
        raise SystemExit("hf_peer.py compares on a GGUF file (HF loads it with gguf_file=...)")
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=DTYPES[args.dtype]).eval()
    prompts = [ours.tokenizer(e.prompt).input_ids for e in load_dataset(args.dataset, args.num_samples).examples]
    run_variant("as it is", hf, ours, prompts, args)
    silence_layers(ours.model, args.perfect_draft_from)
    silence_hf(hf, args.perfect_draft_from)
    run_variant(f"perfect draft (layers >= {args.perfect_draft_from} silenced)", hf, ours, prompts, args)


if __name__ == "__main__":
    main()

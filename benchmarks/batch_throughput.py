"""Batched throughput: aggregate tokens/s by batch size, ours beside HF transformers, in one run.

    python benchmarks/batch_throughput.py --new-tokens 128 --threads 2 --out batch_throughput

For each batch size B (the first B "qa" prompts, of mixed lengths) three arms run interleaved, in a
rotating order: our autoregressive `generate_batch_ids`, our self-speculative decoding on the
perfect-draft model (layers >= E silenced: every draft is accepted, so this bounds what a
LayerSkip-trained model can gain), and HF `generate` on a left-padded batch. All are greedy, float32,
the same GGUF (the embedded SmolLM2), and generate exactly --new-tokens per row (EOS ignored by
ours, suppressed by HF's `min_new_tokens`, so rows are compared up to our first EOS). Aggregate
tokens/s = B x new tokens / wall time of the batch, prefill included; the median of --repeats, each
batch size after a 2-token warm-up of every arm (our weights are laid out per batch size:
model/packing.py).
Writes a table (stdout and JSON) and a PNG of the self-speculative gain over our autoregressive
by batch size.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from layerskip.bench.data import load_dataset
from layerskip.generation.batch import generate_batch_ids
from layerskip.generation.config import GenerationConfig
from layerskip.model.loading import load_model
from layerskip.model.synthetic import silence_layers


def ours(loaded, prompts: list[list[int]], cfg: GenerationConfig, new: int) -> tuple[float, list[list[int]]]:
    t0 = time.perf_counter()
    results = generate_batch_ids(loaded, prompts, replace(cfg, max_new_tokens=new))
    return time.perf_counter() - t0, [r.token_ids for r in results]


def hf(model, prompts: list[list[int]], new: int, pad: int) -> tuple[float, list[list[int]]]:
    """HF batched generate with left padding (the layout its decoder-only generation expects)."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                             pad_token_id=pad)
    return time.perf_counter() - t0, out[:, width:].tolist()


def until_eos(ids: list[int], eos: set[int]) -> list[int]:
    """The tokens before the first EOS: past it ours may pick EOS again where HF's min_new_tokens forbids it."""
    return next((ids[:i] for i, t in enumerate(ids) if t in eos), ids)


def measure(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    base = load_model()
    perfect = replace(base, model=silence_layers(copy.deepcopy(base.model), args.exit_layer))
    hf_model = AutoModelForCausalLM.from_pretrained(base.path.parent, gguf_file=base.path.name,
                                                    dtype=torch.float32).eval()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    texts = [e.prompt for e in load_dataset("qa", num_samples=max(sizes)).examples]
    prompts = [base.tokenizer(t).input_ids for t in texts]
    common = dict(max_new_tokens=args.new_tokens, ignore_eos=True)
    ar = GenerationConfig(**common)
    spec = GenerationConfig(strategy="self_speculative", exit_layer=args.exit_layer,
                            num_speculations=args.num_speculations, **common)
    arms = {
        "ours_ar": lambda p, new: ours(base, p, ar, new),
        "ours_self_spec_perfect_draft": lambda p, new: ours(perfect, p, spec, new),
        "hf_ar": lambda p, new: hf(hf_model, p, new, base.tokenizer.eos_token_id or 0),
    }
    names = list(arms)
    rows = []
    for i, b in enumerate(sizes):
        for name in names:  # warm-up at this batch size: allocations, and the weights laid out for b rows
            arms[name](prompts[:b], 2)
        seconds: dict[str, list[float]] = {n: [] for n in names}
        tokens: dict[str, list[list[int]]] = {}
        for r in range(args.repeats):
            shift = (i + r) % len(names)
            for name in names[shift:] + names[:shift]:
                s, tokens[name] = arms[name](prompts[:b], args.new_tokens)
                seconds[name].append(s)
        row = {"batch_size": b, "new_tokens": args.new_tokens}
        for name in names:
            row[f"{name}_tokens_per_s"] = b * args.new_tokens / statistics.median(seconds[name])
        row["self_spec_over_ar"] = row["ours_self_spec_perfect_draft_tokens_per_s"] / row["ours_ar_tokens_per_s"]
        row["ours_ar_over_hf"] = row["ours_ar_tokens_per_s"] / row["hf_ar_tokens_per_s"]
        eos = set(base.config.eos_token_ids)
        row["ar_rows_equal_hf"] = sum(until_eos(a, eos) == h[: len(until_eos(a, eos))]
                                      for a, h in zip(tokens["ours_ar"], tokens["hf_ar"], strict=True))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["batch_size"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = {"ours_ar": "ours, autoregressive", "ours_self_spec_perfect_draft": "ours, self-spec (perfect draft)",
              "hf_ar": "HF generate, autoregressive"}
    for key, label in labels.items():
        left.plot(sizes, [r[f"{key}_tokens_per_s"] for r in rows], marker="o", label=label)
    left.set(xscale="log", xlabel="batch size", ylabel="aggregate tokens/s", title="Throughput")
    left.set_xticks(sizes, [str(s) for s in sizes])
    left.legend()
    right.plot(sizes, [r["self_spec_over_ar"] for r in rows], marker="o")
    right.axhline(1.0, color="grey", linewidth=0.8)
    right.set(xscale="log", xlabel="batch size", ylabel="self-spec / autoregressive", title="Self-speculative gain")
    right.set_xticks(sizes, [str(s) for s in sizes])
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--batch-sizes", default="1,2,4,8,16")
    p.add_argument("--exit-layer", type=int, default=8)
    p.add_argument("--num-speculations", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("batch_throughput"), help="writes OUT.json and OUT.png")
    args = p.parse_args()
    rows = measure(args)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out.with_suffix(".png"))
    cols = list(rows[0])
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols))


if __name__ == "__main__":
    main()

"""The online exit-layer controller (`--exit-layer auto`) against autoregressive decoding and static
(E, k) settings, side by side in one run.

    python benchmarks/controller.py --new-tokens 32 --rounds 2 --threads 1
    python benchmarks/controller.py --sections perfect8,perfect16,mixed   # a part of it

Three sections, each interleaved arm by arm within a round (A B C ... A B C ...), greedy, batch 1;
an arm's figure is the median over rounds of its decode tokens/s (tokens after the first over the
time after the first, summed over the section's prompts), beside its mean time to first token.
Every arm's tokens are checked equal to autoregressive decoding on every prompt. Auto runs twice:
carrying what it learned from generation to generation (a server, any process that generates more
than once) and fresh each generation (a one-shot `layerskip generate`); on the perfect-draft models
a third time, fresh each generation but starting where `layerskip tune` starts it there (E0, k=6).

  1. SmolLM2-135M as it is, code and chat prompts: auto, autoregressive, and the old default
     static setting (E = L/4, k = 6).
  2. Perfect-draft SmolLM2 (layers >= E0 silenced, E0 = 8 and 16): auto against static settings
     around E0 ((E0, 2), (E0, 4), (E0, 6), (E0 - 1, 6), (E0 + 1, 6); k up to 6, the controller's
     range); which E auto settles on.
  3. A mixed-context model (`mixed_context_model`): a perfect draft from layer 8 on prompts of one
     family of tokens, only from layer 20 on the other; auto against static settings at 8, 14, 20.

Sections 2 and 3 then race the best static cell again beside auto (`confirm`): picked as the
fastest of cells within noise of each other, its first figure is biased upwards.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace

import torch

from layerskip import GenerationConfig, generate_ids, load_model
from layerskip.generation.batch import forget
from layerskip.generation.output import GenerationResult
from layerskip.model.loaded import LoadedModel
from layerskip.model.packing import unpack
from layerskip.model.synthetic import silence_layers

CODE = ["def fibonacci(n):", "import json\n\ndef load_config(path):"]
MIXED = ["def add(a, b):", "for i in range(10):"]  # every token id in the lower half of the vocabulary
CHAT = ["Write a Python function that checks whether a number is prime.", "What is the capital of France?"]
FRESH = "auto, fresh each generation"
TUNED = "auto from tune's setting, fresh each generation"  # perfect-draft sections: start (E0, 6)
ONE_SHOT = (FRESH, TUNED)  # arms that run as one-shot `layerskip generate` processes do
FLAG_DIM = 17  # the mixed-context model's family flag lives in this residual dimension


def chat_ids(lm: LoadedModel, text: str) -> list[int]:
    rendered = lm.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                tokenize=False)
    return lm.tokenizer(rendered, add_special_tokens=False).input_ids


def config(n: int, exit_layer: int | str | None = None, k: int = 6) -> GenerationConfig:
    if exit_layer is None:
        return GenerationConfig(max_new_tokens=n, ignore_eos=True)
    return GenerationConfig(strategy="self_speculative", exit_layer=exit_layer, num_speculations=k,
                            max_new_tokens=n, ignore_eos=True)


def race(lm: LoadedModel, prompts: list[list[int]], arms: dict[str, GenerationConfig],
         rounds: int) -> tuple[dict[str, list[float]], dict[str, list[GenerationResult]]]:
    """Per arm: decode tokens/s of each round over all prompts, and the last round's results.
    Arms alternate prompt by prompt (A B C on prompt 1, A B C on prompt 2, ...). `auto` carries
    what it learned from generation to generation, as in any process that generates more than
    once (the warm-up generation below included); the ONE_SHOT arms run each on its own copy of
    the model and forget before every generation, as a one-shot `layerskip generate` does."""
    if "auto" in arms:
        arms = {**arms, FRESH: arms["auto"]}
    models = {name: replace(lm, model=copy.deepcopy(lm.model)) if name in ONE_SHOT else lm for name in arms}

    def run(name: str, prompt: list[int], cfg: GenerationConfig) -> GenerationResult:
        if name in ONE_SHOT:
            forget(models[name].model)
        return generate_ids(models[name], prompt, cfg)

    for name, cfg in arms.items():  # warm-up: allocations, the cost measurement, lazy imports
        run(name, prompts[0], replace(cfg, max_new_tokens=8))
    speeds: dict[str, list[float]] = {a: [] for a in arms}
    last: dict[str, list[GenerationResult]] = {}
    for r in range(rounds):
        results: dict[str, list[GenerationResult]] = {a: [] for a in arms}
        for p in prompts:
            for name, cfg in arms.items():
                results[name].append(run(name, p, cfg))
        for name, rs in results.items():
            speeds[name].append(sum(x.decode_tokens for x in rs) / sum(x.decode_time_s for x in rs))
            print(f"  round {r + 1} {name}: {speeds[name][-1]:.2f} tok/s", file=sys.stderr, flush=True)
        for name in ("auto", *ONE_SHOT):
            if name in results:
                print(f"  {name} ran: {chosen(results[name])}", file=sys.stderr, flush=True)
        last = results
    return speeds, last


def check_equal(last: dict[str, list[GenerationResult]]) -> bool:
    ar = [r.token_ids for r in last["autoregressive"]]
    bad = [name for name, rs in last.items() if [r.token_ids for r in rs] != ar]
    if bad:
        raise SystemExit(f"tokens differ from autoregressive: {bad}")
    return True


def chosen(results: list[GenerationResult]) -> str:
    """What auto ran, per prompt: the stretches' (E, k, draft vocabulary) with their tokens."""
    out = []
    for r in results:
        parts = []
        for s in r.exit_layer_schedule:
            if s["exit_layer"] is None:
                parts.append(f"AR:{s['tokens']}")
            else:
                head = "" if s["draft_vocab_size"] is None else f"/V{s['draft_vocab_size']}"
                parts.append(f"E{s['exit_layer']}k{s['num_speculations']}{head}:{s['tokens']}")
        out.append(" ".join(parts))
    return " | ".join(out)


def settled(results: list[GenerationResult]) -> int | None:
    """The exit layer that produced most tokens over the prompts (None: autoregressive)."""
    count: Counter = Counter()
    for r in results:
        for s in r.exit_layer_schedule:
            count[s["exit_layer"]] += s["tokens"]
    return count.most_common(1)[0][0]


def report(title: str, speeds: dict[str, list[float]], last: dict[str, list[GenerationResult]]) -> dict[str, float]:
    med = {name: statistics.median(v) for name, v in speeds.items()}
    ar = med["autoregressive"]
    print(f"\n### {title}\n\n| arm | decode tok/s (median) | per round | vs AR | time to first token |\n"
          "|---|---|---|---|---|")
    for name, v in med.items():
        ttft = statistics.mean(r.time_to_first_token_s for r in last[name]) * 1000
        print(f"| {name} | {v:.2f} | {', '.join(f'{x:.2f}' for x in speeds[name])} | {v / ar:.2f}x | "
              f"{ttft:.0f} ms |")
    print(f"\ntokens identical to autoregressive in every arm and prompt: {check_equal(last)}")
    for name in ("auto", *ONE_SHOT):
        if name in last:
            print(f"{name} ran: {chosen(last[name])}")
    return med


def smollm2(lm: LoadedModel, n: int, rounds: int) -> None:
    prompts = [lm.tokenizer(CODE[0]).input_ids, chat_ids(lm, CHAT[0])]
    e = lm.config.n_layers // 4
    arms = {"autoregressive": config(n), "auto": config(n, "auto"), f"static E={e} k=6 (old default)": config(n, e)}
    med = report("SmolLM2-135M as it is, a code and a chat prompt", *race(lm, prompts, arms, rounds))
    print(f"\nauto / autoregressive: {med['auto'] / med['autoregressive']:.3f}x "
          f"(fresh each generation: {med[FRESH] / med['autoregressive']:.3f}x)")


def perfect(lm: LoadedModel, e0: int, n: int, rounds: int) -> None:
    model = replace(lm, model=silence_layers(copy.deepcopy(lm.model), e0))
    prompts = [lm.tokenizer(t).input_ids for t in CODE]
    arms = {"autoregressive": config(n), "auto": config(n, "auto"),
            TUNED: replace(config(n, "auto"), auto_start=(e0, 6))}  # what tune stores on it (docs/benchmarking.md)
    cells = [(e0, 2), (e0, 4), (e0, 6), (e0 - 1, 6), (e0 + 1, 6)]
    arms |= {f"static E={e} k={k}": config(n, e, k) for e, k in cells}
    title = f"Perfect draft from layer {e0} (SmolLM2, layers >= {e0} silenced), 2 code prompts"
    speeds, last = race(model, prompts, arms, rounds)
    med = report(title, speeds, last)
    best = max((a for a in med if a.startswith("static")), key=med.get)
    print(f"\nauto settled on E={settled(last['auto'])} (E0={e0}); best static: {best} {med[best]:.2f} tok/s; "
          f"auto {med['auto']:.2f} = {med['auto'] / med[best]:.1%} of it; fresh each generation "
          f"{med[FRESH]:.2f} = {med[FRESH] / med[best]:.1%}; from tune's setting {med[TUNED] / med[best]:.1%}")
    confirm(model, prompts, arms, best, rounds, title)


def confirm(lm: LoadedModel, prompts: list[list[int]], arms: dict[str, GenerationConfig], best: str, rounds: int,
            title: str) -> None:
    """The best static cell raced again beside auto, on rounds of its own. Picked as the fastest
    of several cells that differ by less than one cell varies between rounds, its figure from the
    race that picked it is biased upwards (the largest of noisy numbers); this one is not."""
    keep = {name: arms[name] for name in ("autoregressive", "auto", TUNED, best) if name in arms}
    med = report(f"{title}: confirmation, the best static cell again", *race(lm, prompts, keep, rounds))
    tuned = f"; from tune's setting {med[TUNED] / med[best]:.1%}" if TUNED in med else ""
    print(f"\nconfirmed: auto {med['auto']:.2f} = {med['auto'] / med[best]:.1%} of {best} ({med[best]:.2f}); "
          f"fresh each generation {med[FRESH]:.2f} = {med[FRESH] / med[best]:.1%}{tuned}")


@torch.no_grad()
def mixed_context_model(lm: LoadedModel, early: int = 8, late: int = 20) -> LoadedModel:
    """SmolLM2 turned into a model whose best exit layer depends on the context: a perfect draft
    from layer `early` where the current token is in the lower half of the vocabulary (family A),
    only from `late` where it is in the upper half (family B).

    A family flag (+-1) is written into residual dimension FLAG_DIM by the (tied) embedding, and no
    layer reads or writes that dimension, so every layer sees the current token's family there.
    Layers >= late are silenced; layers early..late-1 lose their attention output, and their MLP
    gate reads the flag alone, so it is silu(-1000 x) = 0 exactly for A and a strong perturbation for
    B. The final norm's weight on the flag keeps each family's continuation inside the family.
    """
    model = copy.deepcopy(lm.model)
    unpack(model)  # plain weights to edit: an earlier section's decoding may have packed them
    model = silence_layers(model, late)
    v, d = model.config.vocab_size, FLAG_DIM
    emb = model.tok_embeddings.weight  # tied: the head's rows get the flag too
    emb[:, d] = torch.where(torch.arange(v) < v // 2, -1.0, 1.0)
    for i, layer in enumerate(model.layers):
        att, ffn = layer.attention, layer.feed_forward
        att.wqkv.weight[:, d] = 0
        att.wo.weight[d, :] = 0
        ffn.w13.weight[:, d] = 0
        ffn.w2.weight[d, :] = 0
        if early <= i < late:
            att.wo.weight.zero_()
            gate = ffn.w13.weight[: ffn.hidden]
            gate.zero_()
            gate[:, d] = 1000.0
            layer.ffn_norm.weight[d] = 1.0
            ffn.w2.weight /= 100.0
    model.norm.weight[d] = 5000.0
    return replace(lm, model=model)


def mixed(lm: LoadedModel, n: int, rounds: int) -> None:
    half = lm.config.vocab_size // 2
    family_a = [lm.tokenizer(t).input_ids for t in MIXED]
    if any(i >= half for p in family_a for i in p):
        raise SystemExit("a family-A prompt has an upper-half token id")
    family_b = [[i + half for i in p] for p in family_a]
    model = mixed_context_model(lm)
    arms = {"autoregressive": config(n), "auto": config(n, "auto")}
    cells = [(8, 4), (8, 6), (14, 4), (20, 4), (20, 6)]
    arms |= {f"static E={e} k={k}": config(n, e, k) for e, k in cells}
    title = "Mixed-context model: perfect from 8 on family-A prompts, from 20 on family-B prompts (2 + 2 prompts)"
    speeds, last = race(model, family_a + family_b, arms, rounds)
    med = report(title, speeds, last)
    families = {"A": last["auto"][: len(family_a)], "B": last["auto"][len(family_a):]}
    for name, results in families.items():
        out = [i for r in results for i in r.token_ids]
        inside = sum((i < half) == (name == "A") for i in out) / len(out)
        print(f"family {name}: auto settled on E={settled(results)}; generated tokens inside the family: {inside:.0%}")
    best = max((a for a in med if a.startswith("static")), key=med.get)
    print(f"best static: {best} {med[best]:.2f} tok/s; auto {med['auto']:.2f} = {med['auto'] / med[best]:.2f}x of it; "
          f"fresh each generation {med[FRESH]:.2f} = {med[FRESH] / med[best]:.2f}x")
    confirm(model, family_a + family_b, arms, best, rounds, title)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sections", default="smollm2,perfect8,perfect16,mixed",
                    help="comma-separated: smollm2, perfect8, perfect16, mixed")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model()
    n, rounds = args.new_tokens, args.rounds
    sys.stdout.reconfigure(line_buffering=True)
    print(f"# controller benchmark: {n} new tokens, greedy, batch 1, {args.threads} thread(s), "
          f"{rounds} interleaved rounds, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for section in args.sections.split(","):
        if section == "smollm2":
            smollm2(lm, n, rounds)
        elif section.startswith("perfect"):
            perfect(lm, int(section.removeprefix("perfect")), n, rounds)
        elif section == "mixed":
            mixed(lm, n, rounds)
        else:
            raise SystemExit(f"unknown section {section!r}")


if __name__ == "__main__":
    main()

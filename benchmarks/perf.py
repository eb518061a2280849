"""CPU decoding speed of layerskip against HF transformers, the memory bound and llama.cpp, in one run.

    python benchmarks/perf.py                      # SmolLM2-135M (embedded GGUF), 128 new tokens
    python benchmarks/perf.py --new-tokens 64 --rounds 2 --threads 2
    python benchmarks/perf.py --compile             # adds torch.compile'd copies (compiled in warm-up)
    python benchmarks/perf.py --compile --skip-perfect --skip-rss --new-tokens 32 --rounds 3 --threads 1

Every row of a table is measured in the same process, interleaved round by round (A B C A B C ...)
so that load from other processes hits all alike; a row reports the best round (contention only
ever adds time) and the ratio of bests. Speeds are new tokens over the whole generate call
(prefill included, the same for both libraries), batch 1, greedy.

llama.cpp (llama-cpp-python, when installed) runs in the autoregressive race on the same GGUF
(Q4_1, beside our int4) and on Q8_0 and F32 files requantised from it with llama.cpp's own
quantiser (beside our int8 and float32; F32 holds exactly the dequantised weights ours decodes with).

Perfect-draft model: o_proj and down_proj of layers 8..29 zeroed (in ours and in HF's copy), so
those layers are the identity and an exit at E = 8 is accepted 100 %; self-speculation then
runs E = 8, k = 6 in both libraries.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from layerskip import GenerationConfig, generate_ids, load_model
from layerskip.cache_paths import cache_root, file_key
from layerskip.generation.costs import measure_costs, measure_read_bandwidth, weight_bytes
from layerskip.model.loaded import LoadedModel
from layerskip.model.quantize import quantize
from layerskip.model.synthetic import silence_layers

PROMPTS = ["def fibonacci(n):", "The capital of France is", "Once upon a time, there was"]
EXIT, K = 8, 6
DRAFT_VOCAB = 8192  # the reduced-vocabulary draft head row: the 8192 first ids (BPE merge order)


def with_model(lm: LoadedModel, model: torch.nn.Module) -> LoadedModel:
    return replace(lm, model=model)


def perfect_draft(lm: LoadedModel) -> LoadedModel:
    return with_model(lm, silence_layers(copy.deepcopy(lm.model), EXIT))


DTYPES = ("float32", "bfloat16", "int8", "int4")


def variant(lm: LoadedModel, dtype: str) -> LoadedModel:
    if dtype == "float32":
        return lm
    if dtype == "bfloat16":
        return with_model(lm, copy.deepcopy(lm.model).to(torch.bfloat16))
    return with_model(lm, quantize(copy.deepcopy(lm.model), dtype))


def variants(lm: LoadedModel, compiled: bool, dtypes: tuple[str, ...] = DTYPES) -> dict[str, LoadedModel]:
    """The float32 model, a bfloat16 copy and weight-only int8 / int4 copies (bfloat16 activations),
    those of `dtypes`; with `compiled`, the float32, bfloat16 and int4 ones again with compiled
    decode steps."""
    out = {d: variant(lm, d) for d in DTYPES if d in dtypes}
    if compiled:
        out |= {f"{d} compiled": replace(out[d], compile=True) for d in ("float32", "bfloat16", "int4") if d in out}
    return out


def ours(lm: LoadedModel, strategy: str, n: int, **kw) -> Callable[[list[int]], list[int]]:
    extra = dict(exit_layer=EXIT, num_speculations=K) if strategy == "self_speculative" else {}
    cfg = GenerationConfig(strategy=strategy, max_new_tokens=n, ignore_eos=True, **extra, **kw)
    return lambda ids: generate_ids(lm, ids, cfg).token_ids


def hf_runner(hf, n: int, early_exit: bool) -> Callable[[list[int]], list[int]]:
    extra = {}
    if early_exit:  # same algorithm as ours: k fixed, no confidence cut-off
        extra = dict(assistant_early_exit=EXIT, num_assistant_tokens=K, num_assistant_tokens_schedule="constant",
                     assistant_confidence_threshold=0.0)

    def run(ids: list[int]) -> list[int]:
        with torch.inference_mode():
            out = hf.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              pad_token_id=0, eos_token_id=None, **extra)
        return out[0, len(ids):].tolist()

    return run


def hf_models(path: Path) -> dict[str, torch.nn.Module]:
    """HF LlamaForCausalLM from the same GGUF, float32 and bfloat16, plain and perfect-draft."""
    from transformers import AutoModelForCausalLM

    f32 = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    perfect = copy.deepcopy(f32)
    with torch.no_grad():
        for layer in perfect.model.layers[EXIT:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return {"f32": f32, "bf16": copy.deepcopy(f32).to(torch.bfloat16), "perfect_f32": perfect,
            "perfect_bf16": copy.deepcopy(perfect).to(torch.bfloat16)}


def race(runners: dict[str, Callable[[list[int]], list[int]]], prompts: list[list[int]], n: int,
         rounds: int) -> tuple[dict[str, float], dict[str, list[list[int]]]]:
    """Best tokens/s of each runner over `rounds` interleaved rounds of all prompts; the outputs."""
    for run in runners.values():
        for ids in prompts:  # warm-up: first-call allocations, lazy imports, compiling every shape
            run(ids)
    best = dict.fromkeys(runners, 0.0)
    outputs: dict[str, list[list[int]]] = {}
    for _ in range(rounds):
        for name, run in runners.items():
            t0, outs = time.perf_counter(), [run(ids) for ids in prompts]
            best[name] = max(best[name], n * len(prompts) / (time.perf_counter() - t0))
            outputs[name] = outs
            print(f"  {name}: {best[name]:.1f} tok/s (best so far)", file=sys.stderr, flush=True)
    return best, outputs


def table(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n### {title}\n\n| | |\n|---|---|")
    for a, b in rows:
        print(f"| {a} | {b} |")


def peak_rss_mib(strategy: str, n: int, threads: int) -> float:
    """Peak RSS of a fresh process generating with `strategy` (KiB -> MiB)."""
    cmd = [sys.executable, __file__, "--rss-child", strategy, "--new-tokens", str(n), "--threads", str(threads)]
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])


def rss_child(strategy: str, n: int) -> None:
    """Print the peak RSS of generation alone: loading's own peak is reset first (Linux
    clear_refs 5 resets VmHWM), so both strategies are compared on what decoding adds."""
    lm = load_model()
    ids = lm.tokenizer(PROMPTS[0]).input_ids
    Path("/proc/self/clear_refs").write_text("5")
    ours(lm, strategy, n)(ids)
    status = Path("/proc/self/status").read_text()
    print(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024)


# llama.cpp's file types (llama.h `llama_ftype`) and the variant of ours each is compared with.
LLAMA_CPP_TYPES = {"Q4_1": (None, "int4"), "Q8_0": (7, "int8"), "F32": (0, "float32")}


def llama_cpp_files(path: Path) -> dict[str, Path]:
    """The GGUF itself (Q4_1) and Q8_0 / F32 copies requantised from it by llama.cpp, cached."""
    import llama_cpp

    files = {"Q4_1": path}
    for name, (ftype, _) in LLAMA_CPP_TYPES.items():
        if ftype is None:
            continue
        out = cache_root() / "llama_cpp" / f"{path.stem}-{file_key(path)}-{name}.gguf"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype, params.allow_requantize, params.nthread = ftype, True, 1
            if llama_cpp.llama_model_quantize(str(path).encode(), str(out).encode(), ctypes.byref(params)) != 0:
                raise RuntimeError(f"llama.cpp could not write {out}")
        files[name] = out
    return files


def llama_cpp_runners(path: Path, n: int, threads: int) -> dict[str, Callable[[list[int]], list[int]]]:
    """llama.cpp greedy runners on our prompt ids, EOS suppressed like our ignore_eos (empty when
    llama-cpp-python is not installed)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return {}
    runners = {}
    for name, file in llama_cpp_files(path).items():
        llm = Llama(str(file), n_threads=threads, n_threads_batch=threads, verbose=False, n_ctx=512)

        def run(ids: list[int], llm=llm) -> list[int]:
            llm.reset()  # no prompt reuse from the previous call: prefill every time, as ours does
            out = []
            for token in llm.generate(ids, temp=0.0, logits_processor=_no_eos(llm.token_eos())):
                out.append(token)
                if len(out) == n:
                    return out
            return out

        runners[f"llama.cpp {name}"] = run
    return runners


def _no_eos(eos: int):
    from llama_cpp import LogitsProcessorList

    def suppress(_ids, scores):
        scores[eos] = -float("inf")
        return scores

    return LogitsProcessorList([suppress])


def graphs_traced() -> int:
    """Graphs dynamo traced so far in this process (every compiled variant's steps together)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile'd copies")
    ap.add_argument("--skip-perfect", action="store_true", help="no perfect-draft (self-speculation) table")
    ap.add_argument("--skip-rss", action="store_true", help="no peak-RSS table")
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="the variants to measure (comma-separated)")
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.new_tokens
    if args.rss_child:
        return rss_child(args.rss_child, n)

    f32 = load_model()
    prompts = [f32.tokenizer(p).input_ids for p in PROMPTS]
    dtypes = tuple(args.dtypes.split(","))
    models = variants(f32, args.compile, dtypes)
    # silenced before quantising: a zero int4 code is not 0.0
    perfect = {} if args.skip_perfect else variants(perfect_draft(f32), args.compile, dtypes)
    hf = {} if args.skip_hf else hf_models(f32.path)
    print(f"# layerskip perf: SmolLM2-135M, {n} new tokens x {len(prompts)} prompts, greedy, batch 1, "
          f"{args.threads} threads, best of {args.rounds} interleaved rounds")

    runners = {f"ours {d}": ours(lm, "autoregressive", n) for d, lm in models.items()}
    runners |= {f"HF {d}": hf_runner(hf[k], n, False) for d, k in (("float32", "f32"), ("bfloat16", "bf16")) if hf}
    runners |= llama_cpp_runners(f32.path, n, args.threads)
    ar, ar_out = race(runners, prompts, n, args.rounds)
    rows = [(name, f"{tps:.1f} tok/s") for name, tps in ar.items()]
    if args.compile:
        rows.append(("graphs traced, all compiled AR variants (warm-up and rounds)", str(graphs_traced())))
        for d in (d for d in ("float32", "bfloat16", "int4") if d in models):
            same = ar_out[f"ours {d} compiled"] == ar_out[f"ours {d}"]
            rows.append((f"ours {d}: compiled == eager tokens", str(same)))
            rows.append((f"ours {d}: compiled / eager", f"{ar[f'ours {d} compiled'] / ar[f'ours {d}']:.2f}x"))
    for name, (_, d) in LLAMA_CPP_TYPES.items():
        for ours_name in (f"ours {d}", f"ours {d} compiled"):
            if f"llama.cpp {name}" in ar and ours_name in ar:
                rows.append((f"{ours_name} / llama.cpp {name}", f"{ar[ours_name] / ar[f'llama.cpp {name}']:.2f}x"))
    if hf:
        for d in (d for d in ("float32", "bfloat16") if f"ours {d}" in ar):
            rows.append((f"ours / HF {d}", f"{ar[f'ours {d}'] / ar[f'HF {d}']:.2f}x"))
        rows.append(("greedy tokens ours == HF (float32)", str(ar_out["ours float32"] == ar_out["HF float32"])))
    table("Autoregressive", rows)
    ss: dict[str, float] = {}
    if not args.skip_perfect:
        ss = perfect_draft_table(perfect, hf, prompts, n, args.rounds)
    bound_table(models, perfect, ar, ss)
    if not args.skip_rss:
        ar_rss, ss_rss = (peak_rss_mib(s, n, args.threads) for s in ("autoregressive", "self_speculative"))
        table("Peak RSS while generating (float32, separate processes, load peak reset)", [
            ("autoregressive", f"{ar_rss:.0f} MiB"), ("self-speculative", f"{ss_rss:.0f} MiB"),
            ("self-spec / AR", f"{ss_rss / ar_rss:.3f}"),
        ])
    print("\n" + json.dumps({"autoregressive": ar, "perfect_draft": ss}, indent=None))


def perfect_draft_table(perfect: dict[str, LoadedModel], hf: dict, prompts: list[list[int]], n: int,
                        rounds: int) -> dict[str, float]:
    runners = {f"ours {d} AR": ours(lm, "autoregressive", n) for d, lm in perfect.items()}
    runners |= {f"ours {d} self-spec": ours(lm, "self_speculative", n) for d, lm in perfect.items()}
    runners |= {f"ours {d} self-spec, draft head {DRAFT_VOCAB}": ours(perfect[d], "self_speculative", n,
                                                                      draft_vocab_size=DRAFT_VOCAB)
                for d in ("float32", "bfloat16", "int4") if d in perfect}
    for d, k in (("float32", "perfect_f32"), ("bfloat16", "perfect_bf16")):
        if hf:
            runners[f"HF {d} assistant_early_exit"] = hf_runner(hf[k], n, True)
    ss, ss_out = race(runners, prompts, n, rounds)
    rows = [(name, f"{tps:.1f} tok/s") for name, tps in ss.items()]
    for d in perfect:
        same = ss_out[f"ours {d} self-spec"] == ss_out[f"ours {d} AR"]
        rows.append((f"ours {d}: self-spec == AR tokens", str(same)))
        rows.append((f"ours {d}: self-spec / AR", f"{ss[f'ours {d} self-spec'] / ss[f'ours {d} AR']:.2f}x"))
    for d in (d for d in ("float32", "bfloat16", "int4") if d in perfect):
        reduced = f"ours {d} self-spec, draft head {DRAFT_VOCAB}"
        rows.append((f"{reduced} == AR tokens", str(ss_out[reduced] == ss_out[f"ours {d} AR"])))
    if hf:
        for d in ("float32", "bfloat16"):
            hf_ee = ss[f"HF {d} assistant_early_exit"]
            names = [f"ours {d} self-spec", f"ours {d} compiled self-spec",
                     f"ours {d} self-spec, draft head {DRAFT_VOCAB}"]
            rows += [(f"{name} / HF early exit", f"{ss[name] / hf_ee:.2f}x") for name in names if name in ss]
    fastest = max(ss, key=ss.get)
    rows.append(("fastest exact configuration", f"{fastest}: {ss[fastest]:.1f} tok/s"))
    table(f"Perfect-draft model, E={EXIT}, k={K}", rows)
    return ss


def bound_table(models: dict[str, LoadedModel], perfect: dict[str, LoadedModel], ar: dict[str, float],
                ss: dict[str, float]) -> None:
    bandwidth = measure_read_bandwidth()
    rows = [("measured read bandwidth (sum of 256 MiB)", f"{bandwidth / 1e9:.1f} GB/s")]
    for d, lm in models.items():
        wb = weight_bytes(lm.model)
        tps = ar[f"ours {d}"]
        rows.append((f"{d}: weights read per token", f"{wb / 1e6:.0f} MB"))
        reached = f"{wb * tps / 1e9:.1f} GB/s = {wb * tps / bandwidth:.0%} of bound ({bandwidth / wb:.0f} tok/s)"
        rows.append((f"{d}: AR weight stream reached", reached))
        if f"ours {d} self-spec" not in ss:
            continue
        costs = measure_costs(perfect[d].model, max_tokens=K + 1, bandwidth=False)
        bound = (K + 1) / costs.round_s(EXIT, K)
        rows.append((f"{d}: self-spec vs cost-model bound (alpha=1)",
                     f"{ss[f'ours {d} self-spec']:.1f} / {bound:.1f} tok/s = {ss[f'ours {d} self-spec'] / bound:.0%}"))
    table("Against the bound", rows)


if __name__ == "__main__":
    main()

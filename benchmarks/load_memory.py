"""Peak memory and time of loading a checkpoint and generating 8 tokens: ours beside HF transformers.

    python benchmarks/make_checkpoint.py --shape llama3.2-1b --out /tmp/ckpt-llama3.2-1b
    python benchmarks/load_memory.py --model /tmp/ckpt-llama3.2-1b --dtypes bfloat16 float32 int8
    python benchmarks/load_memory.py --gguf            # SmolLM2's GGUF, dequantisation cache cold and warm
    python benchmarks/load_memory.py --table           # README's memory table of the facebook/layerskip-* models

Every row runs in a fresh subprocess (so peaks do not mix) that loads, generates 8 greedy tokens
with EOS ignored and reports its own peak RSS (`ru_maxrss`) and load time; wall time is the whole
process, imports included. Ours is `load_model` + `generate_ids` (what `layerskip generate` runs);
HF is `AutoModelForCausalLM.from_pretrained(dtype=...)` + `generate`. The target for ours:
peak RSS <= 1.1 x the weights as loaded (model/shapes.py `loaded_bytes`) + 1 GiB for the process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 2**30
PROMPT = "The capital of France is"
NEW_TOKENS = 8


def child(kind: str, model: str | None, dtype: str, threads: int) -> dict:
    """Runs in the subprocess: load, generate, report."""
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if kind == "ours":
        from layerskip import GenerationConfig, generate_ids, load_model

        lm = load_model(model, dtype=dtype)
        load_s = time.perf_counter() - t0
        ids = lm.tokenizer(PROMPT).input_ids
        tokens = generate_ids(lm, ids, GenerationConfig(max_new_tokens=NEW_TOKENS, ignore_eos=True)).token_ids
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model) if model else _default_gguf()
        kw = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
        where = path.parent if path.suffix == ".gguf" else path
        hf = AutoModelForCausalLM.from_pretrained(where, dtype=getattr(torch, dtype), **kw).eval()
        load_s = time.perf_counter() - t0
        ids = AutoTokenizer.from_pretrained(where, **kw)(PROMPT).input_ids
        out = hf.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        tokens = out[0, len(ids):].tolist()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"load_s": load_s, "peak_rss": rss, "tokens": tokens}


def _default_gguf() -> Path:
    from layerskip.model.loading import default_model_path

    return default_model_path()


def run_row(kind: str, model: str | None, dtype: str, threads: int, env: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--dtypes", dtype, "--threads", str(threads)]
    cmd += ["--model", model] if model else []
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | (env or {}))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"wall_s": wall}


def weights_bytes(model: str | None, dtype: str) -> int:
    from layerskip.model.loading import load_config, resolve
    from layerskip.model.shapes import loaded_bytes

    return loaded_bytes(load_config(resolve(model)), dtype)


def print_row(label: str, dtype: str, loader: str, weights: int, r: dict, same: str) -> None:
    target = 1.1 * weights + GIB
    if "error" in r:
        print(f"| {label} | {dtype} | {loader} | {weights / GIB:.2f} | {target / GIB:.2f} | failed: {r['error']} |||||")
        return
    ok = "yes" if r["peak_rss"] <= target else "**no**"
    ok = ok if loader.startswith("ours") else "-"
    print(f"| {label} | {dtype} | {loader} | {weights / GIB:.2f} | {target / GIB:.2f} | {r['peak_rss'] / GIB:.2f} "
          f"| {ok} | {r['load_s']:.1f} | {r['wall_s']:.1f} | {same} |", flush=True)


def header() -> None:
    print("| model | dtype | loader | weights GiB | target GiB | peak RSS GiB | within target | load s | wall s "
          "| same tokens as ours |")
    print("|---|---|---|---:|---:|---:|---|---:|---:|---|", flush=True)


def checkpoint_rows(model: str, dtypes: list[str], threads: int, hf: bool) -> None:
    label = Path(model).name
    for dtype in dtypes:
        weights = weights_bytes(model, dtype)
        ours = run_row("ours", model, dtype, threads)
        print_row(label, dtype, "ours", weights, ours, "-")
        if hf and dtype in ("float32", "bfloat16"):
            theirs = run_row("hf", model, dtype, threads)
            same = "yes" if theirs.get("tokens") == ours.get("tokens") else "no"
            print_row(label, dtype, "HF transformers", weights, theirs, same)


def gguf_rows(threads: int, hf: bool) -> None:
    weights = weights_bytes(None, "float32")
    with tempfile.TemporaryDirectory() as cache:
        env = {"LAYERSKIP_CACHE": cache}
        cold = run_row("ours", None, "float32", threads, env)
        print_row("SmolLM2 GGUF", "float32", "ours, cache cold", weights, cold, "-")
        warm = run_row("ours", None, "float32", threads, env)
        same = "yes" if warm.get("tokens") == cold.get("tokens") else "no"
        print_row("SmolLM2 GGUF", "float32", "ours, cache warm", weights, warm, same)
    if hf:
        theirs = run_row("hf", None, "float32", threads)
        same = "yes" if theirs.get("tokens") == cold.get("tokens") else "no"
        print_row("SmolLM2 GGUF", "float32", "HF transformers", weights, theirs, same)


def memory_table() -> None:
    """README: the weights of each facebook/layerskip-* checkpoint as loaded, and what loading needs."""
    from layerskip.model.shapes import LAYERSKIP_CHECKPOINTS, kv_cache_bytes, loaded_bytes

    dtypes = ["bfloat16", "float32", "int8", "int4"]
    print("| checkpoint | " + " | ".join(dtypes) + " | KV cache per 1k tokens (bf16) |")
    print("|---|" + "---:|" * (len(dtypes) + 1))
    for name, cfg in LAYERSKIP_CHECKPOINTS.items():
        cells = [f"{loaded_bytes(cfg, d) / GIB:.1f} ({(1.1 * loaded_bytes(cfg, d) + GIB) / GIB:.0f})" for d in dtypes]
        print(f"| {name} | " + " | ".join(cells) + f" | {kv_cache_bytes(cfg, 1024) / GIB:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a HF model directory (benchmarks/make_checkpoint.py)")
    p.add_argument("--dtypes", nargs="+", default=["bfloat16"])
    p.add_argument("--gguf", action="store_true", help="SmolLM2's GGUF rows, dequantisation cache cold and warm")
    p.add_argument("--no-hf", action="store_true", help="skip the HF transformers rows")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--table", action="store_true", help="print README's memory table and exit")
    p.add_argument("--child", choices=["ours", "hf"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.table:
        return memory_table()
    if args.child:
        return print(json.dumps(child(args.child, args.model, args.dtypes[0], args.threads)))
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    header()
    if args.model:
        checkpoint_rows(args.model, args.dtypes, args.threads, not args.no_hf)
    if args.gguf:
        gguf_rows(args.threads, not args.no_hf)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

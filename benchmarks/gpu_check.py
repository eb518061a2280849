"""What a machine with a GPU checks, in one run of under 8 minutes on one H200, printed as one table.

    python benchmarks/gpu_check.py            # needs CUDA; exits 2 without it
    python benchmarks/gpu_check.py --smoke    # every section on the CPU at tiny sizes, gloo for NCCL

Sections: CUDA logits against CPU logits (float32, bfloat16); greedy self-speculation equal to
autoregressive on CUDA (SmolLM2 and its perfect-draft variant); decode tokens/s of ours, HF
`generate` and HF `generate(assistant_early_exit=E)` in bfloat16, eager and compiled; peak GPU memory
of self-speculation against autoregressive; decode tokens/s of a Llama-3-8B-shaped random bfloat16
model built in GPU memory, ours eager and compiled against HF with the same weights; one torchrun
step of LayerSkip training over NCCL (2 processes with 2 GPUs, else 1). Each section has a time
budget and catches its own failure, which shows in the table; the others still run. Only the
public API is used (`layerskip.load_model`, `generate_ids`, `GenerationConfig`).

Decode tokens/s leaves the prefill out: ours from `decode_time_s`, HF from the time of N new tokens
minus the time of 1, both after a warm-up (which pays for compilation).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import torch

import layerskip
from layerskip import GenerationConfig, LoadedModel
from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer
from layerskip.model.synthetic import silence_layers
from layerskip.model.weights import to_hf

PROMPT = "def fibonacci(n):\n    "
LLAMA3_8B = ModelConfig(vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                        intermediate_size=14336, max_seq_len=2048, rope_theta=500000.0)
TINY_LLAMA = ModelConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128,
                         max_seq_len=256)


@dataclasses.dataclass
class Setup:
    """What differs between the GPU run and the CPU smoke run."""

    device: str
    model: str | None  # None: the embedded SmolLM2; a directory in the smoke run
    label: str  # the model's name in the table
    exit_layer: int  # E of self-speculation, and where the perfect-draft model is silenced
    k: int
    new_tokens: int
    big: ModelConfig  # the real-size model built in memory
    big_tokens: int
    backend: str  # the distributed backend of the training step
    compile: bool | str  # True: inductor (CUDA graphs on CUDA); "eager" in the smoke run: dynamo only
    budgets: dict[str, int]  # seconds per section


def gpu_setup() -> Setup:
    budgets = {"parity": 40, "spec == AR": 40, "decode tok/s": 180, "peak memory": 20, "8B shape": 120,
               "torchrun": 60}  # 460 s in all: under 8 minutes with the start
    return Setup("cuda", None, "SmolLM2", 8, 4, 128, LLAMA3_8B, 64, "nccl", True, budgets)


def smoke_setup(workdir: Path) -> Setup:
    """A 4-layer random model with the embedded tokenizer, saved so that `load_model` reads it."""
    from layerskip.model.loading import load_tokenizer, resolve
    from layerskip.model.saving import save_pretrained
    from layerskip.model.synthetic import random_model

    cfg = ModelConfig(vocab_size=49152, dim=32, n_layers=4, n_heads=4, n_kv_heads=2, intermediate_size=64,
                      max_seq_len=128, tie_word_embeddings=True)
    save_pretrained(random_model(cfg), workdir / "tiny", load_tokenizer(resolve(None)))
    budgets = dict.fromkeys(gpu_setup().budgets, 60)
    return Setup("cpu", str(workdir / "tiny"), "tiny", 2, 2, 6, TINY_LLAMA, 6, "gloo", "eager", budgets)


# ---------------------------------------------------------------- measuring

def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def ours(lm: LoadedModel, ids: list[int], new: int, exit_layer: int | None = None, k: int = 4):
    strategy = "autoregressive" if exit_layer is None else "self_speculative"
    cfg = GenerationConfig(strategy=strategy, exit_layer=exit_layer, num_speculations=k, max_new_tokens=new,
                           ignore_eos=True)
    return layerskip.generate_ids(lm, ids, cfg)


def ours_rate(lm: LoadedModel, ids: list[int], new: int, exit_layer: int | None = None, k: int = 4) -> float:
    ours(lm, ids, new, exit_layer, k)  # warm-up: compilation, caches, packing
    r = ours(lm, ids, new, exit_layer, k)
    return r.decode_tokens / r.decode_time_s


def hf_model(lm: LoadedModel):
    """transformers' LlamaForCausalLM holding our weights (to_hf's tensors are views of ours)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model = lm.model
    dtype, device = model.tok_embeddings.weight.dtype, model.tok_embeddings.weight.device
    with torch.device("meta"):
        hf = LlamaForCausalLM(LlamaConfig(**model.config.to_hf(), dtype=dtype))
    hf.load_state_dict(to_hf(model.state_dict(), model.config), strict=False, assign=True)
    hf.tie_weights()
    with torch.device(device):  # its frequencies were made on meta: make them again
        hf.model.rotary_emb = type(hf.model.rotary_emb)(hf.config)
    return hf.eval()


def hf_generate(hf, ids: list[int], new: int, device: str, **kwargs) -> tuple[float, list[int]]:
    x = torch.tensor([ids], device=device)
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, min_new_tokens=new,
                          do_sample=False, pad_token_id=0, **kwargs)
    sync(device)
    return time.perf_counter() - t0, out[0, len(ids):].tolist()


def hf_rate(hf, ids: list[int], new: int, device: str, **kwargs) -> float:
    hf_generate(hf, ids, new, device, **kwargs)  # warm-up
    one, _ = hf_generate(hf, ids, 1, device, **kwargs)
    full, _ = hf_generate(hf, ids, new, device, **kwargs)
    return (new - 1) / max(full - one, 1e-9)


def hf_early_exit(exit_layer: int, k: int) -> dict:
    return dict(assistant_early_exit=exit_layer, num_assistant_tokens=k, num_assistant_tokens_schedule="constant",
                assistant_confidence_threshold=0.0)


# ---------------------------------------------------------------- sections

Row = tuple[str, str]  # (what, result)


def parity(s: Setup) -> Iterator[Row]:
    for dtype in ("float32", "bfloat16"):
        cpu = layerskip.load_model(s.model, dtype=dtype, device="cpu")
        ids = torch.tensor([cpu.tokenizer(PROMPT).input_ids])
        with torch.inference_mode():
            want = cpu.model(ids).float()
            del cpu
            dev = layerskip.load_model(s.model, dtype=dtype, device=s.device)
            got = dev.model(ids.to(s.device)).float().cpu()
        same_top = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
        diff = (got - want).abs().max().item()
        yield f"{dtype} logits, max |{s.device} - cpu|", f"{diff:.3g} (top-1 same {same_top:.0%})"


def spec_equals_ar(s: Setup) -> Iterator[Row]:
    lm = layerskip.load_model(s.model, dtype="float32", device=s.device)
    ids = lm.tokenizer(PROMPT).input_ids
    for name in (s.label, "perfect draft"):
        if name == "perfect draft":
            silence_layers(lm.model, s.exit_layer)
        ar = ours(lm, ids, s.new_tokens)
        sp = ours(lm, ids, s.new_tokens, s.exit_layer, s.k)
        verdict = "yes" if sp.token_ids == ar.token_ids else "NO"
        yield f"{name} float32: self-spec E={s.exit_layer} k={s.k} == AR", (
            f"{verdict} ({len(ar.token_ids)} tokens, acceptance {sp.stats.acceptance_rate:.0%})")


def decode_rates(s: Setup) -> Iterator[Row]:
    lm = layerskip.load_model(s.model, dtype="bfloat16", device=s.device)
    ids = lm.tokenizer(PROMPT).input_ids
    hf = hf_model(lm)
    e, k, n = s.exit_layer, s.k, s.new_tokens
    for name in (s.label, "perfect draft"):
        if name == "perfect draft":
            silence_layers(lm.model, e)  # HF holds the same tensors: silenced too
        for compiled in (False, True):
            mode = "compiled" if compiled else "eager"
            run = dataclasses.replace(lm, compile=s.compile) if compiled else lm
            yield f"{name} bf16 {mode}: ours AR", f"{ours_rate(run, ids, n):.1f} tok/s"
            yield f"{name} bf16 {mode}: ours self-spec E={e} k={k}", f"{ours_rate(run, ids, n, e, k):.1f} tok/s"
            if compiled:
                yield f"{name} bf16 compiled: HF generate (static cache)", (
                    f"{hf_rate(hf, ids, n, s.device, cache_implementation='static'):.1f} tok/s")
            else:
                yield f"{name} bf16 eager: HF generate", f"{hf_rate(hf, ids, n, s.device):.1f} tok/s"
                yield f"{name} bf16 eager: HF assistant_early_exit={e}", (
                    f"{hf_rate(hf, ids, n, s.device, **hf_early_exit(e, k)):.1f} tok/s")


def peak_memory(s: Setup) -> Iterator[Row]:
    if s.device != "cuda":
        yield "peak memory", "skipped: no CUDA allocator on the CPU"
        return
    lm = layerskip.load_model(s.model, dtype="bfloat16", device=s.device)
    ids = lm.tokenizer(PROMPT).input_ids
    for name, exit_layer in (("AR", None), (f"self-spec E={s.exit_layer} k={s.k}", s.exit_layer)):
        torch.cuda.reset_peak_memory_stats()
        ours(lm, ids, s.new_tokens, exit_layer, s.k)
        yield f"{s.label} bf16 {name}: max_memory_allocated", f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"


def random_bf16(cfg: ModelConfig, device: str) -> Transformer:
    """A random model made directly on `device` in bfloat16: no float32 copy, no host memory."""
    with torch.device("meta"):
        model = Transformer(cfg).to(torch.bfloat16)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if name.endswith("norm.weight") else p.normal_(0.0, 0.02)
    return model.eval()


def big_model(s: Setup) -> Iterator[Row]:
    from layerskip.model.loading import load_tokenizer, resolve

    model = random_bf16(s.big, s.device)
    lm = LoadedModel(model, load_tokenizer(resolve(s.model)), "random", Path("."))
    ids = list(range(1, 17))
    shape = f"dim {s.big.dim} x {s.big.n_layers} layers, vocab {s.big.vocab_size}"
    yield f"{shape} bf16: ours eager", f"{ours_rate(lm, ids, s.big_tokens):.1f} tok/s"
    yield f"{shape} bf16: ours compiled", (
        f"{ours_rate(dataclasses.replace(lm, compile=s.compile), ids, s.big_tokens):.1f} tok/s")
    yield f"{shape} bf16: HF generate (same weights)", f"{hf_rate(hf_model(lm), ids, s.big_tokens, s.device):.1f} tok/s"


def torchrun_step(s: Setup) -> Iterator[Row]:
    gpus = torch.cuda.device_count() if s.device == "cuda" else 0
    procs = 2 if gpus >= 2 else 1
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
               __file__, "--train-worker", s.backend, f"run.output_dir={out}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output")
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        loss = next(r["loss"] for r in records if "loss" in r)
        state = torch.load(out / "checkpoints" / "step_0000001" / "state.pt", weights_only=True)
        rng = sorted(state["rng"][0])
    yield f"{procs} process(es), {s.backend}: one training step", f"loss {loss:.3f}, checkpoint RNG {'+'.join(rng)}"


SECTIONS: dict[str, Callable[[Setup], Iterator[Row]]] = {
    "parity": parity, "spec == AR": spec_equals_ar, "decode tok/s": decode_rates, "peak memory": peak_memory,
    "8B shape": big_model, "torchrun": torchrun_step,
}


# ---------------------------------------------------------------- running

class OverBudget(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Interrupt the section when its budget is spent (at the next Python bytecode)."""

    def expire(signum, frame):
        raise OverBudget(f"over its {seconds} s budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_section(name: str, section: Callable[[Setup], Iterator[Row]], s: Setup) -> tuple[list[Row], bool]:
    """The section's rows, and whether it ran to the end; a failure becomes its last row."""
    rows: list[Row] = []
    t0 = time.perf_counter()
    try:
        with time_limit(s.budgets[name]):
            for row in section(s):
                rows.append(row)
        ok = True
    except Exception as e:  # one section's failure must not stop the others
        detail = "".join(traceback.format_exception_only(e)).strip().splitlines()[-1]
        rows.append(("FAILED", detail[:200]))
        ok = False
    finally:
        if s.device == "cuda":
            torch.cuda.empty_cache()
    rows.append(("section time", f"{time.perf_counter() - t0:.1f} s"))
    return rows, ok


def print_table(results: dict[str, list[Row]]) -> None:
    width = max(len(what) for rows in results.values() for what, _ in rows)
    for name, rows in results.items():
        print(f"\n[{name}]")
        for what, result in rows:
            print(f"  {what:<{width}}  {result}")


def train_worker(backend: str, overrides: list[str]) -> int:
    """Under torchrun: join a `backend` group, check one all-reduce on this process's device, and
    run one step of `layerskip train` on the tiny config in that group."""
    import torch.distributed as dist

    from layerskip.cli import main

    dist.init_process_group(backend)
    try:
        cuda = backend == "nccl"
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        x = torch.ones(1, device=device)
        dist.all_reduce(x)
        assert x.item() == dist.get_world_size(), x
        tiny = str(resources.files("layerskip.configs") / "train_tiny.yaml")
        return main(["train", "--config", tiny, "optim.max_steps=1", "run.progress=false", "run.eval_at_start=false",
                     "data.max_eval_tokens=256", "run.threads=0", *overrides])
    finally:
        dist.destroy_process_group()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="every section on the CPU at tiny sizes (checks the script)")
    p.add_argument("--train-worker", metavar="BACKEND", help=argparse.SUPPRESS)  # torchrun's worker
    args, rest = p.parse_known_args()
    if args.train_worker:
        return train_worker(args.train_worker, rest)
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check.py needs a CUDA GPU (none is visible); --smoke runs its logic on the CPU", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        s = smoke_setup(Path(tmp)) if args.smoke else gpu_setup()
        results, failed = {}, []
        for name, section in SECTIONS.items():
            results[name], ok = run_section(name, section, s)
            if not ok:
                failed.append(name)
    where = "CPU smoke run" if args.smoke else torch.cuda.get_device_name()
    print(f"gpu_check on {where}, torch {torch.__version__}")
    print_table(results)
    summary = f"{len(SECTIONS) - len(failed)}/{len(SECTIONS)} sections ran"
    print(f"\n{summary}; failed: {', '.join(failed)}" if failed else f"\n{summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

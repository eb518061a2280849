"""Write a randomly initialised, sharded bfloat16 HF Llama checkpoint of a real model's shape.

    python benchmarks/make_checkpoint.py --shape llama3.2-1b --out /tmp/ckpt-llama3.2-1b   # ~2.5 GB
    python benchmarks/make_checkpoint.py --shape llama2-7b --out /tmp/ckpt-llama2-7b       # ~13.5 GB

For measuring loading (benchmarks/load_memory.py): config.json, sharded safetensors with an
index, and SmolLM2's tokenizer (its 49152 ids cover the prompts; generated ids it lacks decode to
nothing, which is fine for a benchmark). Tensors are generated and written one at a time
(model/streaming.py), so writing never holds more than one tensor. Never commit the output.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from layerskip.model.config import ModelConfig
from layerskip.model.loading import default_model_path, load_tokenizer
from layerskip.model.shapes import LAYERSKIP_CHECKPOINTS
from layerskip.model.streaming import write_safetensors

SHAPES = {short: LAYERSKIP_CHECKPOINTS[f"facebook/layerskip-{name}"]
          for short, name in [("llama2-7b", "llama2-7B"), ("llama3.2-1b", "llama3.2-1B")]}
DTYPE = torch.bfloat16


def hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of HF's LlamaForCausalLM for this config, in HF's order."""
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    shapes = {"model.embed_tokens.weight": (cfg.vocab_size, cfg.dim)}
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (q, cfg.dim), p + "self_attn.k_proj.weight": (kv, cfg.dim),
            p + "self_attn.v_proj.weight": (kv, cfg.dim), p + "self_attn.o_proj.weight": (cfg.dim, q),
            p + "mlp.gate_proj.weight": (cfg.intermediate_size, cfg.dim),
            p + "mlp.up_proj.weight": (cfg.intermediate_size, cfg.dim),
            p + "mlp.down_proj.weight": (cfg.dim, cfg.intermediate_size),
            p + "input_layernorm.weight": (cfg.dim,), p + "post_attention_layernorm.weight": (cfg.dim,),
        }
    shapes["model.norm.weight"] = (cfg.dim,)
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, cfg.dim)
    return shapes


def shards(shapes: dict[str, tuple[int, ...]], max_bytes: int) -> list[dict[str, tuple[int, ...]]]:
    """Consecutive tensors grouped into files of at most `max_bytes` (one tensor may exceed it)."""
    out: list[dict[str, tuple[int, ...]]] = [{}]
    size = 0
    for name, shape in shapes.items():
        n = torch.Size(shape).numel() * DTYPE.itemsize
        if out[-1] and size + n > max_bytes:
            out.append({})
            size = 0
        out[-1][name] = shape
        size += n
    return out


def random_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator, std: float = 0.02) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=DTYPE)
    return torch.empty(shape, dtype=DTYPE).normal_(0.0, std, generator=gen)


def write_checkpoint(cfg: ModelConfig, out: Path, shard_bytes: int, seed: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    groups = shards(hf_shapes(cfg), shard_bytes)
    weight_map, total = {}, 0
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        with (out / fname).open("wb") as f:
            write_safetensors(f, group, DTYPE, lambda name, g=group: random_tensor(name, g[name], gen))
        weight_map |= dict.fromkeys(group, fname)
        total += sum(torch.Size(s).numel() for s in group.values()) * DTYPE.itemsize
        print(f"wrote {out / fname}", flush=True)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    tok = load_tokenizer(default_model_path())
    cfg = replace(cfg, bos_token_id=tok.bos_token_id, eos_token_ids=[tok.eos_token_id])
    (out / "config.json").write_text(json.dumps(cfg.to_hf() | {"torch_dtype": "bfloat16"}, indent=2))
    tok.save_pretrained(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=SHAPES, required=True)
    p.add_argument("--out", type=Path, required=True, help="a directory outside the repository, e.g. under /tmp")
    p.add_argument("--shard-gb", type=float, default=2.0, help="largest shard (HF uses 2-5 GB)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    write_checkpoint(SHAPES[args.shape], args.out, int(args.shard_gb * 1e9), args.seed)


if __name__ == "__main__":
    main()

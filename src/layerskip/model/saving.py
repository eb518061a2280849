"""Save our model as a HF-compatible directory (config.json + safetensors), loadable by
`load_model(dir)` and by transformers' LlamaForCausalLM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from layerskip.model import weights
from layerskip.model.llama import Transformer


def save_pretrained(model: Transformer, out_dir: str | Path, tokenizer: Any = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    hf = weights.to_hf(sd, model.config)
    tmp = out / "model.safetensors.tmp"
    save_file(hf, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / "model.safetensors")  # atomic: a crash never leaves a half-written file
    cfg = model.config.to_hf() | {"torch_dtype": str(model.output.weight.dtype).removeprefix("torch.")}
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out

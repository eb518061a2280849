"""Training data as two token tensors (inputs, labels) [N, T], and a stateless batch order.

Pretraining text is packed into contiguous chunks; instruction records are padded one per row
with their prompt tokens masked out of the loss. The batch of step s is a pure function of
(seed, s, rank), so the data position of a checkpoint is just its step.
"""

from __future__ import annotations

import glob
import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from layerskip.errors import LayerSkipError
from layerskip.training.config import DataSection
from layerskip.training.early_exit import IGNORE_INDEX


class ByteTokenizer:
    """UTF-8 bytes plus an end-of-text token: for models trained from scratch in tests."""

    vocab_size = 257
    eos_token_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


def encode(tokenizer: Any, text: str) -> list[int]:
    if isinstance(tokenizer, ByteTokenizer):
        return tokenizer.encode(text)
    return tokenizer.encode(text, add_special_tokens=False)


@dataclass
class TokenData:
    inputs: Tensor  # [N, T]
    labels: Tensor  # [N, T], IGNORE_INDEX where not scored

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def n_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def expand_paths(patterns: list[str]) -> list[Path]:
    """Sorted files matching the globs; `{stdlib}` stands for the Python standard library."""
    stdlib = sysconfig.get_paths()["stdlib"]
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(Path(pattern.replace("{stdlib}", stdlib)).expanduser())))
        if not matches:
            raise LayerSkipError(f"data: no file matches {pattern!r}")
        files.extend(Path(m) for m in matches if Path(m).is_file())
    return files


def pack(ids: list[int], seq_len: int) -> TokenData:
    """Contiguous chunks of seq_len+1 tokens -> (inputs, next-token labels)."""
    n = (len(ids) - 1) // seq_len
    if n < 1:
        return TokenData(torch.empty(0, seq_len, dtype=torch.long), torch.empty(0, seq_len, dtype=torch.long))
    t = torch.tensor(ids[: n * seq_len + 1])
    return TokenData(t[:-1].view(n, seq_len), t[1:].view(n, seq_len))


def instruction_rows(records: list[tuple[list[int], list[int]]], seq_len: int) -> TokenData:
    """One row per (prompt, response): loss on the response only, padded and truncated to seq_len."""
    inputs = torch.zeros(len(records), seq_len, dtype=torch.long)
    labels = torch.full((len(records), seq_len), IGNORE_INDEX, dtype=torch.long)
    for row, (prompt, response) in enumerate(records):
        ids = (prompt + response)[: seq_len + 1]
        target = ([IGNORE_INDEX] * len(prompt) + response)[1 : seq_len + 1]
        inputs[row, : len(ids) - 1] = torch.tensor(ids[:-1])
        labels[row, : len(target)] = torch.tensor(target)
    return TokenData(inputs, labels)


def concat(parts: list[TokenData]) -> TokenData:
    parts = [p for p in parts if len(p)]
    if not parts:
        raise LayerSkipError("data: not enough tokens for one sequence")
    return TokenData(torch.cat([p.inputs for p in parts]), torch.cat([p.labels for p in parts]))


def read_jsonl(path: Path, tokenizer: Any, cfg: DataSection) -> TokenData:
    """{"text"} records are packed; {"prompt", "response"} records are masked instruction rows."""
    eos, text_ids, rows = tokenizer.eos_token_id, [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise LayerSkipError(f"{path}:{n}: not valid JSON ({e})") from e
        if "prompt" in rec and "response" in rec:
            rows.append((encode(tokenizer, rec["prompt"]), encode(tokenizer, rec["response"]) + [eos]))
        elif cfg.text_field in rec:
            text_ids += encode(tokenizer, rec[cfg.text_field]) + [eos]
        else:
            raise LayerSkipError(f"{path}:{n}: needs {cfg.text_field!r} or 'prompt' and 'response'")
    return concat([pack(text_ids, cfg.seq_len), instruction_rows(rows, cfg.seq_len)])


def read_files(patterns: list[str], tokenizer: Any, cfg: DataSection) -> TokenData:
    files = expand_paths(patterns)
    if cfg.format == "jsonl":
        return concat([read_jsonl(f, tokenizer, cfg) for f in files])
    ids: list[int] = []
    for f in files:  # documents separated by end-of-text
        ids += encode(tokenizer, f.read_text(errors="replace")) + [tokenizer.eos_token_id]
    return pack(ids, cfg.seq_len)


def read_hf(split: str, tokenizer: Any, cfg: DataSection) -> TokenData:
    try:
        import datasets
    except ImportError as e:
        raise LayerSkipError("data.format hf needs the `datasets` package: pip install datasets") from e
    name, _, subset = (cfg.hf_dataset or "").partition(":")
    try:
        ds = datasets.load_dataset(name, subset or None, split=split)
    except Exception as e:
        raise LayerSkipError(f"cannot load HF dataset {cfg.hf_dataset!r} ({split}): {e}") from e
    ids: list[int] = []
    for rec in ds:
        ids += encode(tokenizer, rec[cfg.text_field]) + [tokenizer.eos_token_id]
    return pack(ids, cfg.seq_len)


def load_data(cfg: DataSection, tokenizer: Any) -> tuple[TokenData, TokenData | None]:
    """(train, held-out eval) token data."""
    if cfg.format == "hf":
        train = read_hf(cfg.hf_split, tokenizer, cfg)
        held = read_hf(cfg.hf_eval_split, tokenizer, cfg) if cfg.hf_eval_split else None
    else:
        train = read_files(cfg.train, tokenizer, cfg)
        held = read_files(cfg.eval, tokenizer, cfg) if cfg.eval else None
    if held is not None:
        rows = max(1, cfg.max_eval_tokens // cfg.seq_len)
        held = TokenData(held.inputs[:rows], held.labels[:rows])
    return train, held


def batch_indices(n: int, seed: int, step: int, micro: int, rank: int, world: int, sizes: tuple[int, int]) -> Tensor:
    """Row indices of one micro-batch: epochs are seeded permutations, walked in order.

    sizes = (batch_size, grad_accum). Stateless, so resuming at `step` needs nothing else.
    """
    batch, accum = sizes
    start = ((step * accum + micro) * world + rank) * batch
    pos = torch.arange(start, start + batch)
    epochs, offsets = pos // n, pos % n
    out = torch.empty(batch, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        sel = epochs == epoch
        out[sel] = perm[offsets[sel]]
    return out

"""A cheaper draft head: the early exit scores only the most frequent tokens.

SmolLM2's LM head is 28 M of its 135 M parameters, so a draft through 8 of its 30 layers pays as
much for the head as for the layers. Drafting over the N most frequent tokens cuts that cost by
V / N. Verification still runs the full head over the whole vocabulary, so the output does not
change: greedy decoding is token-identical, and in sampling the draft distribution is simply zero
outside the subset, which speculative sampling allows. What can drop is acceptance, when the
model wants a token outside the subset.

The ranking comes from a file of token ids (most frequent first, see `rank_tokens` and
`write_ranking`), else from the model's packaged ranking (Gemma 3 270M ships one built from a
local corpus: its id order is a poor ranking), else from the tokenizer's id order: BPE
vocabularies number their merges in the order they were learnt, most frequent pairs first.
"""

from __future__ import annotations

import itertools
import json
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig
from layerskip.model.llama import Transformer
from layerskip.model.packing import decoding_linear


@dataclass
class DraftHead:
    """The head the early exit drafts with; `ids` maps its outputs to vocabulary ids (None: all)."""

    head: nn.Module
    ids: Tensor | None = None

    def logits(self, model: Transformer, h: Tensor) -> Tensor:
        """Draft logits [..., N] of layer-E hidden states h [..., D], scaled as the full head's."""
        return model.scale_logits(self.head(model.norm(h)))

    def to_vocab(self, index: Tensor) -> Tensor:
        """Vocabulary ids of positions in the draft logits."""
        return index if self.ids is None else self.ids[index]

    def full_probs(self, q: Tensor, vocab_size: int) -> Tensor:
        """A draft distribution over the subset [..., N] as one over the vocabulary [..., V]."""
        if self.ids is None:
            return q
        return q.new_zeros(*q.shape[:-1], vocab_size).index_copy_(-1, self.ids, q)


def rank_tokens(tokenizer: Any, texts: Iterable[str]) -> list[int]:
    """Token ids of a corpus, most frequent first (ties by id, so the ranking is reproducible)."""
    counts: Counter[int] = Counter()
    for text in texts:
        counts.update(tokenizer(text, add_special_tokens=False).input_ids)
    return sorted(counts, key=lambda tok: (-counts[tok], tok))


def write_ranking(path: str | Path, ids: list[int]) -> None:
    Path(path).write_text(json.dumps(ids))


def read_ranking(path: str | Path) -> list[int]:
    """Token ids from a JSON list or a whitespace-separated text file."""
    p = Path(path)
    if not p.is_file():
        raise LayerSkipError(f"draft vocabulary file not found: {p}")
    text = p.read_text().strip()
    try:
        ids = json.loads(text) if text.startswith("[") else [int(t) for t in text.split()]
    except ValueError as e:
        raise LayerSkipError(f"{p}: expected a JSON list or whitespace-separated token ids ({e})") from e
    if not all(isinstance(i, int) for i in ids):
        raise LayerSkipError(f"{p}: token ids must be integers")
    return ids


def select_ids(ranking: list[int] | None, size: int | None, vocab_size: int, always: Iterable[int]) -> list[int]:
    """`always` plus the first distinct valid ids of the ranking (default: id order) up to `size`
    (None: the whole ranking); a ranking shorter than `size` is filled up in id order."""
    order: Iterable[int] = range(vocab_size) if ranking is None else ranking
    if size is not None:
        order = itertools.chain(order, range(vocab_size))
    chosen = dict.fromkeys(i for i in always if 0 <= i < vocab_size)
    for i in order:
        if size is not None and len(chosen) >= size:
            break
        if not 0 <= i < vocab_size:
            raise LayerSkipError(f"draft vocabulary: token id {i} is outside the vocabulary (0..{vocab_size - 1})")
        chosen[i] = None
    return sorted(chosen)


def restrict_rows(head: nn.Module, ids: Tensor) -> nn.Module:
    """A linear head (float or quantised) over the rows `ids` only."""
    if isinstance(head, nn.Linear):
        return decoding_linear(head.weight.detach()[ids])
    if hasattr(head, "rows"):
        return head.rows(ids)
    raise LayerSkipError(f"cannot reduce the vocabulary of a {type(head).__name__} head")


# One reduced head per model and id set, built on first use (a gather of N rows of the head).
_HEADS: weakref.WeakKeyDictionary[Transformer, dict[tuple[int, ...], DraftHead]] = weakref.WeakKeyDictionary()


def draft_head(model: Transformer, ids: list[int] | None) -> DraftHead:
    """The draft head over `ids` (None or the whole vocabulary: the model's own head)."""
    if ids is None or len(ids) >= model.config.vocab_size:
        return DraftHead(model.output)
    cache = _HEADS.setdefault(model, {})
    key = tuple(ids)
    if key not in cache:
        index = torch.tensor(ids, device=model.tok_embeddings.weight.device)
        cache.clear()  # keep one: a new id set replaces the old
        cache[key] = DraftHead(restrict_rows(model.output, index), index)
    return cache[key]


def configured_draft_head(model: Transformer, cfg: GenerationConfig) -> DraftHead:
    """The draft head `cfg` asks for: the model's own, or one over the most frequent tokens (ranked
    by `cfg`'s file, else the model's packaged ranking, else id order)."""
    if cfg.draft_vocab_size is None and cfg.draft_vocab_file is None:
        return draft_head(model, None)
    mcfg = model.config
    ranking_file = cfg.draft_vocab_file or mcfg.draft_vocab_ranking
    ranking = read_ranking(ranking_file) if ranking_file else None
    return draft_head(model, select_ids(ranking, cfg.draft_vocab_size, mcfg.vocab_size, mcfg.eos_token_ids))

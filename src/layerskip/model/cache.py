"""Static caches indexed by position.

Rollback is free: the generator simply does not advance its position past rejected tokens,
and attention masks out every slot beyond a token's own position, so stale entries are never read
and are overwritten by the next write. Each row of a batch is written at its own positions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class KVCache(nn.Module):
    """One layer's keys and values, preallocated as [batch, kv_heads, max_seq_len, head_dim]."""

    def __init__(self, batch: int, max_seq_len: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype):
        super().__init__()
        shape = (batch, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("rows", torch.arange(batch)[:, None], persistent=False)  # [B, 1]

    @property
    def max_seq_len(self) -> int:
        return self.k.shape[2]

    def update(
        self, input_pos: Tensor, k: Tensor, v: Tensor, rows: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Write k, v [B, H, T, D] of input b at slots input_pos[b] ([B, T]) of cache row rows[b]
        (default: row b); return the whole cache."""
        rows = self.rows if rows is None else rows
        self.k[rows, :, input_pos] = k.transpose(1, 2)  # the indexed view is [B, T, H, D]
        self.v[rows, :, input_pos] = v.transpose(1, 2)
        return self.k, self.v


class ExitQueryCache(nn.Module):
    """Layer-E hidden states of tokens whose layers E..L-1 have not run yet.

    Drafting writes one row per processed token; verification reads them all at once, so the
    early layers never run twice for a drafted token.
    """

    def __init__(self, batch: int, capacity: int, dim: int, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("h", torch.zeros(batch, capacity, dim, dtype=dtype), persistent=False)

    @property
    def capacity(self) -> int:
        return self.h.shape[1]

    def write(self, slot: int, h: Tensor) -> None:
        """Store h [B, T, D] at slots slot..slot+T-1."""
        self.h[:, slot : slot + h.shape[1]] = h

    def read(self, n: int) -> Tensor:
        """A copy of the first n pending states, [B, n, D].

        A copy (k+1 rows) rather than a view: under inference_mode it is an inference tensor like
        every other activation, so a torch.compile'd block does not compile a second variant for it.
        """
        return self.h[:, :n].clone()

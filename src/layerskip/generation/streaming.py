"""Incremental detokenisation for streaming: token ids in, text deltas out."""

from __future__ import annotations

from typing import Any


class TextStream:
    """Turns committed token ids into printable text deltas.

    Decoding token by token breaks multi-byte characters and merged spaces, so the whole answer
    is re-decoded and only the new suffix is returned; an incomplete character is held back.
    """

    def __init__(self, tokenizer: Any, skip_ids: set[int] | None = None):
        self.tokenizer = tokenizer
        self.skip_ids = skip_ids or set()
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, ids: list[int]) -> str:
        self.ids.extend(t for t in ids if t not in self.skip_ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        delta, self.emitted = text[len(self.emitted) :], text
        return delta

    def peek(self, ids: list[int]) -> str:
        """Text that `ids` would add, without committing them (for showing rejected drafts)."""
        text = self.tokenizer.decode(self.ids + ids, skip_special_tokens=True)
        return text[len(self.emitted) :]

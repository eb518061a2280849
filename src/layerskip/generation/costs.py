"""A cost model of decoding: what one decoder layer and the LM head (full, and the reduced draft
head) cost for 1..n tokens, what memory bandwidth the machine has, and what that predicts for
autoregressive and self-speculative decoding. The exit-layer controller (controller.py) ranks
(E, k, draft head) with it while decoding; `analyze` and `tune` (bench/) rank offline with it.

A self-speculative round with exit layer E, k drafts and per-draft acceptance rate alpha:
  draft:  k+1 single-token passes through layers 0..E-1 (the pending token and k drafts),
          k draft heads (full or reduced vocabulary);
  verify: layers E..L-1 and the full head once over k+1 tokens;
  yield:  (1 - alpha^(k+1)) / (1 - alpha) tokens on average (accepted prefix plus one).
Where a layer's fastest layout for k+1 rows is not its fastest for one (float32 at batch 1 on an
AVX2 CPU, packing.py), a decoder may lay the layers from E on out for verifications: then those
cost `verify_layer_s` (for every token count, one-token passes through them included), and moving
a layer between the layouts costs `relayout_s`.
The speedup is tokens per round times the autoregressive time per token, over the round time.

    costs = measure_costs(model, max_tokens=k + 1)
    costs.speedup(exit_layer=8, k=4, alpha=0.6)

`model_costs` measures once per model shape, dtype, weight kind, device and thread count and keeps
the result under $LAYERSKIP_CACHE/costs/, so a decoder pays for the measurement once per machine.
"""

from __future__ import annotations

import hashlib
import json
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerskip.cache_paths import cache_root, write_text_whole
from layerskip.errors import LayerSkipError
from layerskip.generation.draft_vocab import DraftHead
from layerskip.generation.steps import prepare_for_decoding
from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer, positions
from layerskip.model.packing import lay_out_layers, lay_out_tied_head


def expected_tokens_per_round(alpha: float, k: int) -> float:
    """Mean tokens committed by one verification: sum_{i=0..k} alpha^i (i.i.d. acceptance)."""
    if not 0 <= alpha <= 1:
        raise LayerSkipError(f"acceptance rate must be in [0, 1], got {alpha}")
    if alpha == 1:
        return float(k + 1)
    return (1 - alpha ** (k + 1)) / (1 - alpha)


def acceptance_from_mean_length(mean_accepted_length: float, k: int) -> float:
    """Invert expected_tokens_per_round by bisection: the alpha that yields this mean length."""
    target = min(max(mean_accepted_length, 1.0), k + 1.0)
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_tokens_per_round(mid, k) < target else (lo, mid)
    return (lo + hi) / 2


@dataclass
class LayerCosts:
    """Measured seconds; index t-1 of a list holds the cost for t tokens."""

    n_layers: int
    layer_s: list[float]  # one decoder layer over t new tokens, KV cache at `context` positions
    head_s: list[float]  # final norm + LM head over t tokens
    call_s: float  # fixed cost of one forward call (embedding, rotary tables, mask)
    context: int
    weight_bytes: int  # bytes read per autoregressive token: all layers + the LM head
    read_bandwidth_bytes_per_s: float | None = None
    draft_head_s: list[float] | None = None  # the reduced draft head over t tokens (None: not measured)
    verify_layer_s: list[float] | None = None  # a layer in the verification layout (None: the same layout)
    relayout_s: float = 0.0  # moving one layer between the one-row and the verification layout

    @property
    def max_tokens(self) -> int:
        return len(self.layer_s)

    def _check(self, t: int) -> None:
        if not 1 <= t <= self.max_tokens:
            raise LayerSkipError(f"costs measured for 1..{self.max_tokens} tokens, asked for {t}")

    def forward_s(self, n_layers: int, tokens: int, with_head: bool = True, batch: int = 1) -> float:
        """One forward call through n_layers layers over `tokens` tokens of each of `batch` rows
        (beyond the measured token counts, cost grows in proportion)."""
        return self._call_s(0, n_layers, tokens, with_head, batch, None)

    def _call_s(self, lo: int, hi: int, tokens: int, with_head: bool, batch: int, laid_from: int | None) -> float:
        """One forward call through layers lo..hi-1, those from `laid_from` on (None: none) in the
        verification layout."""
        self._check(tokens)
        t = tokens * batch
        split = hi if laid_from is None or self.verify_layer_s is None else min(max(laid_from, lo), hi)
        layers = (split - lo) * _scaled(self.layer_s, t)
        if hi > split:
            layers += (hi - split) * _scaled(self.verify_layer_s, t)
        return self.call_s + layers + (_scaled(self.head_s, t) if with_head else 0.0)

    def autoregressive_s(self, batch: int = 1, laid_from: int | None = None) -> float:
        """One autoregressive step of `batch` rows, the layers from `laid_from` on laid out for verifications."""
        return self._call_s(0, self.n_layers, 1, True, batch, laid_from)

    def draft_head_token_s(self, reduced: bool, batch: int = 1) -> float:
        """One draft head call over one token per row: the reduced head's where asked and measured."""
        heads = self.draft_head_s if reduced and self.draft_head_s else self.head_s
        return _scaled(heads, batch)

    def autoregressive_token_s(self) -> float:
        return self.autoregressive_s()

    def early_exit_token_s(self, exit_layer: int) -> float:
        return self.forward_s(exit_layer, 1)

    def round_s(self, exit_layer: int, k: int, reduced: bool = False, batch: int = 1,
                laid_from: int | None = None) -> float:
        """Time of one self-speculative round: k+1 draft passes, k draft heads (the reduced one
        where asked), one verification; the layers from `laid_from` on laid out for verifications."""
        self._check_exit(exit_layer)
        draft = (k + 1) * self._call_s(0, exit_layer, 1, False, batch, laid_from)
        verify = self._call_s(exit_layer, self.n_layers, k + 1, True, batch, laid_from)
        return draft + k * self.draft_head_token_s(reduced, batch) + verify

    def relayout_s_between(self, laid_from: int | None, to: int | None) -> float:
        """Seconds to move the layers' layout from `laid_from` to `to` (None: no layer laid out for
        verifications)."""
        ends = [self.n_layers if e is None else e for e in (laid_from, to)]
        return abs(ends[0] - ends[1]) * self.relayout_s

    def speedup(self, exit_layer: int, k: int, alpha: float) -> float:
        """Predicted self-speculative tokens/s over autoregressive tokens/s."""
        tokens = expected_tokens_per_round(alpha, k)
        return tokens * self.autoregressive_token_s() / self.round_s(exit_layer, k)

    def break_even_alpha(self, exit_layer: int, k: int) -> float | None:
        """The acceptance rate at which self-speculation starts to pay; None if it never does."""
        if self.speedup(exit_layer, k, 1.0) <= 1.0:
            return None
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.speedup(exit_layer, k, mid) < 1.0 else (lo, mid)
        return hi

    def autoregressive_bound_tokens_per_s(self) -> float | None:
        """Memory-bound ceiling: every weight is read once per token at the measured bandwidth."""
        if not self.read_bandwidth_bytes_per_s:
            return None
        return self.read_bandwidth_bytes_per_s / self.weight_bytes

    def _check_exit(self, exit_layer: int) -> None:
        if not 1 <= exit_layer < self.n_layers:
            raise LayerSkipError(f"exit layer must be in 1..{self.n_layers - 1}, got {exit_layer}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["autoregressive_token_s"] = self.autoregressive_token_s()
        d["autoregressive_bound_tokens_per_s"] = self.autoregressive_bound_tokens_per_s()
        return d


def _scaled(values: list[float], t: int) -> float:
    """values[t-1]; past the last measured count, the last value in proportion to t."""
    n = len(values)
    return values[t - 1] if t <= n else values[-1] * t / n


def memory_bound_costs(cfg: ModelConfig, max_tokens: int, draft_vocab_size: int | None = None) -> LayerCosts:
    """Costs in weight units, for when nothing has been measured: decoding taken as memory-bound,
    so a pass costs the parameters it reads whatever its token count. A small model's LM head
    weighs as much as many layers, which makes every draft token expensive."""
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    layer = cfg.dim * (q + 2 * kv) + q * cfg.dim + 3 * cfg.dim * cfg.intermediate_size
    head = cfg.vocab_size * cfg.dim
    return LayerCosts(
        n_layers=cfg.n_layers,
        layer_s=[float(layer)] * max_tokens,
        head_s=[float(head)] * max_tokens,
        call_s=0.0,
        context=0,
        weight_bytes=cfg.n_layers * layer + head,  # parameters, the unit of this model
        draft_head_s=None if draft_vocab_size is None else [float(draft_vocab_size * cfg.dim)] * max_tokens,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fns: list[Callable[[], Any]], device: torch.device, repeats: int, inner: int = 1) -> list[float]:
    """Seconds per call of each fn, interleaved round-robin so that load from other processes
    hits all of them alike; the minimum over repeats, since contention only ever adds time."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            _sync(device)
            best[i] = min(best[i], (time.perf_counter() - t0) / inner)
    return best


def weight_bytes(model: Transformer) -> int:
    """Bytes of the weights one autoregressive token reads: every layer and the head, quantised
    ones included (their weights are buffers); the embedding is a row lookup, caches are not weights."""

    def nbytes(module: torch.nn.Module) -> int:
        tensors = [p for _, p in module.named_parameters()]
        tensors += [b for name, b in module.named_buffers() if "cache" not in name]
        return sum(t.numel() * t.element_size() for t in tensors)

    return nbytes(model.layers) + nbytes(model.output) + nbytes(model.norm)


@torch.inference_mode()
def measure_read_bandwidth(device: torch.device | str = "cpu", nbytes: int = 256 << 20, repeats: int = 5) -> float:
    """Bytes per second the device reads when summing a buffer larger than its caches."""
    device = torch.device(device)
    buf = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    (seconds,) = time_calls([buf.sum], device, repeats)
    return nbytes / seconds


@torch.inference_mode()
def measure_costs(
    model: Transformer,
    max_tokens: int,
    context: int = 128,
    repeats: int = 7,
    bandwidth: bool = True,
    draft_head: nn.Module | None = None,
) -> LayerCosts:
    """Time layer 0 and the head (and `draft_head`, a reduced one, where given) for 1..max_tokens
    new tokens after `context` cached positions.

    Layers of a Llama model are identical in shape, so one layer's cost stands for all. Every
    product is timed in the layout decoding gives it: one row per product (packing.py), except a
    tied head over several tokens, which decoding lays out for verifications (up to 3x faster
    there than the one-row layout). Where the layers' own layout for several rows differs, layer 0
    is timed in it too (`verify_layer_s`), with the cost of moving a layer (`relayout_s`). The KV
    cache is (re)allocated as large as needed and left in place; its content is scratch.
    """
    if max_tokens < 1:
        raise LayerSkipError(f"max_tokens must be >= 1, got {max_tokens}")
    emb = model.tok_embeddings.weight  # never quantised: its dtype is the activations'
    device, dtype = emb.device, emb.dtype
    context = min(context, model.config.max_seq_len - max_tokens)
    prepare_for_decoding(model, context + max_tokens)  # the layout generation decodes with
    layer, dim = model.layers[0], model.config.dim
    states = [torch.randn(1, t, dim, device=device, dtype=dtype) * 0.1 for t in range(1, max_tokens + 1)]
    per_t: list[Callable[[], Any]] = []
    for h in states:
        ctx = model.attention_context(positions(context, h.shape[1], device), h.shape[1], device)
        per_t.append(lambda h=h, ctx=ctx: layer(h, ctx))
        if draft_head is not None:
            per_t.append(lambda h=h: draft_head(model.norm(h)))
    token = torch.zeros(1, 1, dtype=torch.long, device=device)
    pos = positions(context, 1, device)
    one_row = [lambda: model.exit_logits(states[0]), lambda: model.run_layers(model.embed(token), pos, 0, 0)]
    seconds = time_calls([*per_t, *one_row], device, repeats, inner=3)
    stride = 1 if draft_head is None else 2
    layer_s, (head_1, call_s) = seconds[0:-2:stride], seconds[-2:]
    lay_out_tied_head(model, emb, max_tokens)  # a verification's layout, for the head over 2.. tokens
    head_s = [head_1, *time_calls([lambda h=h: model.exit_logits(h) for h in states[1:]], device, repeats, inner=3)]
    lay_out_tied_head(model, emb, 1)
    verify_layer_s, relayout_s = _verification_layout_costs(model, max_tokens, per_t[::stride], device, repeats)
    return LayerCosts(
        n_layers=model.n_layers,
        layer_s=layer_s,
        head_s=head_s,
        call_s=call_s,
        context=context,
        weight_bytes=weight_bytes(model),
        read_bandwidth_bytes_per_s=measure_read_bandwidth(device) if bandwidth else None,
        draft_head_s=None if draft_head is None else seconds[1:-2:2],
        verify_layer_s=verify_layer_s,
        relayout_s=relayout_s,
    )


RELAYOUT_LAYERS = 4  # layers moved together to time a relayout


def _verification_layout_costs(
    model: Transformer, max_tokens: int, layer_calls: list[Callable[[], Any]], device: torch.device, repeats: int
) -> tuple[list[float] | None, float]:
    """Layer 0 over 1..max_tokens tokens laid out for verifications, and the seconds to move one
    layer there or back: the faster of two round trips of layers 0-3, per layer and direction (a
    decoder moves many layers in a row, each into the memory the one before freed: per layer that
    is about half of what one layer alone takes); (None, 0.0) where the layouts are the same."""
    if not lay_out_layers([model.layers[0]], max_tokens):
        return None, 0.0
    seconds = time_calls(layer_calls, device, repeats, inner=3)
    lay_out_layers([model.layers[0]], 1)
    layers = model.layers[:RELAYOUT_LAYERS]
    trips = []
    for _ in range(2):
        start = time.perf_counter()
        lay_out_layers(layers, max_tokens)
        lay_out_layers(layers, 1)
        trips.append(time.perf_counter() - start)
    return seconds, min(trips) / (2 * len(layers))


# Costs per model, measured on first use (a model's shape, dtype and weight kind do not change).
COSTS_VERSION = 3  # of how measure_costs times (2: a tied head's verification layout, 3: the layers'); in the key
_MEASURED: weakref.WeakKeyDictionary[Transformer, dict[str, LayerCosts]] = weakref.WeakKeyDictionary()


def costs_key(model: Transformer, max_tokens: int, draft_head: DraftHead | None) -> str:
    """What the costs depend on: the shapes, the activations' dtype and the kind of the layers'
    weights (float or quantised), the reduced draft head's size, the device, the CPU threads."""
    c = model.config
    weights = type(model.layers[0].attention.wqkv).__name__
    head = None if draft_head is None or draft_head.ids is None else len(draft_head.ids)
    device = model.tok_embeddings.weight.device.type
    return (f"{c.n_layers}x{c.dim}/{c.n_heads}/{c.n_kv_heads}/{c.head_dim}/{c.intermediate_size}/{c.vocab_size}"
            f"#{model.dtype}#{weights}#head={head}#t={max_tokens}#{device}#threads={torch.get_num_threads()}"
            f"#v{COSTS_VERSION}")


def model_costs(model: Transformer, max_tokens: int, draft_head: DraftHead | None = None) -> LayerCosts:
    """The model's costs for 1..max_tokens tokens (and the reduced `draft_head`'s): from memory,
    else from $LAYERSKIP_CACHE/costs/, else measured briefly (about a second for a 135M model on
    one CPU thread) and saved. Measuring reallocates the KV cache: call it before preparing one."""
    key = costs_key(model, max_tokens, draft_head)
    per_model = _MEASURED.setdefault(model, {})
    if key not in per_model:
        path = cache_root() / "costs" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
        costs = _read_costs(path)
        if costs is None:
            reduced = None if draft_head is None or draft_head.ids is None else draft_head.head
            costs = _nondecreasing(measure_costs(model, max_tokens, context=64, repeats=7, bandwidth=False,
                                                 draft_head=reduced))
            write_text_whole(path, json.dumps(asdict(costs)))
        per_model[key] = costs
    return per_model[key]


def _nondecreasing(costs: LayerCosts) -> LayerCosts:
    """More tokens never cost less: a count timed high by contention takes the least time of any
    larger count (the minimum over repeats already drops most of it)."""

    def suffix_min(values: list[float] | None) -> list[float] | None:
        if values is None:
            return None
        out = list(values)
        for i in range(len(out) - 2, -1, -1):
            out[i] = min(out[i], out[i + 1])
        return out

    return replace(costs, layer_s=suffix_min(costs.layer_s), head_s=suffix_min(costs.head_s),
                   draft_head_s=suffix_min(costs.draft_head_s), verify_layer_s=suffix_min(costs.verify_layer_s))


def _read_costs(path: Path) -> LayerCosts | None:
    """Saved costs, or None where missing or unreadable (then they are measured again)."""
    try:
        data = json.loads(path.read_text())
        return LayerCosts(**{f.name: data[f.name] for f in fields(LayerCosts)})
    except (OSError, ValueError, KeyError, TypeError):
        return None

"""Weights laid out for the fastest CPU matrix-vector product measured here.

Decoding is a chain of matrix-vector products, so the kernel that streams weights fastest sets
the speed. On the CPUs we measured (docs/performance.md), oneDNN's matmul on a weight reordered
once into its own blocked layout beat `F.linear` (MKL for float32, a generic path for bfloat16)
end to end by 1.1x in float32 and 1.3x in bfloat16, on one row and on a verification's k+1 rows.

`pack_for_decoding(model)` swaps every eligible `nn.Linear` for a `PackedLinear` holding only the
reordered weight (no second copy), the way `quantize` swaps in quantised modules;
`unpack(model)` puts back `nn.Linear` modules with the identical values. Generation packs where it
sets up the caches (`generation.steps.prepare_for_decoding`); the model itself never packs, and
training or a dtype change after decoding call `unpack` first (a packed layer refuses gradients).

The layout depends on how many rows each product multiplies (`rows`: the decoding batch). On an
AVX2-only CPU MKL's float32 product is the faster one for one row, oneDNN's packed one for two rows
or more (SmolLM2 shapes, 1 thread: the FFN's [576 -> 3072] 0.24 vs 0.36 ms at 1 row, 2.8 vs 1.1 ms
at 7, 3.2 vs 1.6 ms at 8; docs/performance.md), so a batch packs what a single sequence leaves
plain, and going back to one row unpacks it again.

A head tied to the embedding is not packed (that would hold the matrix twice). In float32 it is
laid out for the rows of its products (`head_rows`: a verification's k+1, times the batch): for one
row transposed in memory ([in, out], same shape and values), which MKL's one-row product streams
faster than [out, in]; for more, contiguous and computed as `ColumnLinear`'s (W @ x.T).T, which on
this AVX2 EPYC stayed below F.linear at every row count from 2 to 56 (1 thread, CPU ms, SmolLM2's
49152 x 576 head: 14 vs 28 at 2 rows, 25 vs 45 at 8, 94 vs 98 at 56; Gemma 3's 262144 x 640: 110 vs
185, 197 vs 328, 575 vs 761). `LAYERSKIP_NO_PACK=1` keeps plain modules everywhere.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn


def _packable(weight: Tensor) -> bool:
    """CPU float32/bfloat16 where oneDNN runs them; LAYERSKIP_NO_PACK=1 turns packing off (A/B)."""
    if os.environ.get("LAYERSKIP_NO_PACK") == "1":
        return False
    if weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if weight.dtype == torch.bfloat16:
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    # Measured faster only with AVX-512; on an AVX2-only EPYC plain MKL won (65 vs 85 ms per SmolLM2 token).
    return weight.dtype == torch.float32 and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def _packs(weight: Tensor, rows: int) -> bool:
    """Whether products of `rows` rows use oneDNN's layout: where `_packable` says so, and on AVX2
    for float32 products of more than one row."""
    if _packable(weight):
        return True
    multi_row_float32 = rows > 1 and weight.dtype == torch.float32 and weight.device.type == "cpu"
    return multi_row_float32 and torch.backends.mkldnn.is_available() and os.environ.get("LAYERSKIP_NO_PACK") != "1"


@torch.library.custom_op("layerskip::packed_linear", mutates_args=())
def packed_linear(x: Tensor, weight: Tensor) -> Tensor:
    """The oneDNN product as an opaque op, so that torch.compile calls it rather than lowering it
    (inductor cannot take an oneDNN-layout tensor as a graph input)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")


@packed_linear.register_fake
def _(x: Tensor, weight: Tensor) -> Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


class PackedLinear(nn.Module):
    """A bias-free linear layer whose weight is in oneDNN's layout: inference only."""

    def __init__(self, weight: Tensor):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.trainable = weight.requires_grad  # restored by `unpack`
        # The oneDNN layout is opaque; state_dict() shows the plain tensor (_save_to_state_dict).
        # No batch-size hint: a layout packed for 1 row made float32 verification of 7 rows 1.5x slower.
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
        self.register_buffer("weight", packed, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("PackedLinear is for decoding; call packing.unpack(model) before training")
        if torch.compiler.is_compiling():
            return packed_linear(x, self.weight)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, None, "none", [], "")  # no op-wrapper cost

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.weight.to_dense()  # same keys and values as nn.Linear

    def __deepcopy__(self, memo: dict) -> PackedLinear:
        clone = PackedLinear(self.weight.to_dense())  # an oneDNN tensor has no storage to copy
        clone.trainable = self.trainable
        return clone

    def rows(self, ids: Tensor) -> PackedLinear:
        """The same layer restricted to output rows `ids` (a reduced-vocabulary head)."""
        return PackedLinear(self.weight.to_dense()[ids])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN layout"


def plain_layout(weight: Tensor, rows: int = 1) -> bool:
    """float32 on CPU for products of up to two rows: transposed in memory (MKL's product is faster);
    else contiguous. True if it moved the values."""
    if weight.dtype == torch.float32 and weight.device.type == "cpu" and rows <= 2:
        if weight.stride() == (1, weight.shape[0]):
            return False
        weight.data = weight.t().contiguous().t()
    elif weight.is_contiguous():
        return False
    else:
        weight.data = weight.contiguous()
    return True


class ColumnLinear(nn.Linear):
    """A bias-free linear layer computed as (W @ x.T).T: one product of the [out, in] matrix by the
    rows of x as columns. For a float32 head tied to the embedding (never packed) over several rows:
    on this AVX2 EPYC MKL's few-row product (F.linear) of Gemma 3's 262144 x 640 head took 258 CPU
    ms for 3 rows and 236 for 4 against 80 for one, the column product 131 and 90 (1 thread,
    benchmarks/gemma_head.py), so a verification of k+1 rows costs about what one row costs."""

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        return (self.weight @ flat.t()).t().reshape(*x.shape[:-1], self.out_features)


def _tied_head_layout(parent: nn.Module, name: str, rows: int) -> None:
    """A head tied to the embedding keeps its one matrix: for one-row products [in, out] in memory
    with F.linear (MKL's fastest one-row product: 48 vs 80 CPU ms on Gemma 3's head), for more a
    contiguous [out, in] with the column product (float32 on CPU, unless LAYERSKIP_NO_PACK=1)."""
    head = getattr(parent, name)
    w = head.weight
    no_pack = os.environ.get("LAYERSKIP_NO_PACK") == "1"
    column = rows > 1 and w.dtype == torch.float32 and w.device.type == "cpu" and not no_pack
    kind = ColumnLinear if column else nn.Linear
    if type(head) is not kind:
        swapped = kind(head.in_features, head.out_features, bias=False, device="meta")
        swapped.weight = w  # the same Parameter: the embedding stays tied to it
        setattr(parent, name, swapped)
    if column and not w.is_contiguous():
        w.data = w.contiguous()
    elif not column:
        plain_layout(w)


def _linear(weight: Tensor, requires_grad: bool) -> nn.Linear:
    """A bias-free nn.Linear around `weight` [out, in] itself (no copy)."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=requires_grad)
    return linear


def decoding_linear(weight: Tensor) -> nn.Module:
    """The fastest inference module for a bias-free weight [out, in]."""
    if _packable(weight):
        return PackedLinear(weight)
    linear = _linear(weight.detach(), requires_grad=False)
    plain_layout(linear.weight)
    return linear


def module_slots(model: nn.Module, kind: type | tuple[type, ...]) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every `kind` submodule; no reference to the submodules themselves, so
    each replaced one is freed as soon as it is swapped out."""
    return [(parent, name) for parent in model.modules() for name, child in parent.named_children()
            if isinstance(child, kind)]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (another OS or C library)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None


def _return_freed_memory() -> None:
    """glibc keeps the blocks of replaced weights (measured on SmolLM2: +190 MiB RSS after packing,
    and a peak of twice the weights); handing each back at once keeps the peak at one matrix."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _lay_out_linear(parent: nn.Module, name: str, rows: int, trim: bool = True) -> bool:
    """Lay out one bias-free linear layer (packed or plain) for products of `rows` rows; True if
    it changed. `trim`: hand a replaced weight's memory back at once (see _return_freed_memory)."""
    module = getattr(parent, name)
    if isinstance(module, PackedLinear):
        if _packs(module.weight, rows):
            return False
        setattr(parent, name, _linear(module.weight.to_dense(), module.trainable))
        plain_layout(getattr(parent, name).weight, rows)
    elif module.bias is None and _packs(module.weight, rows):
        setattr(parent, name, PackedLinear(module.weight))
    else:
        return plain_layout(module.weight, rows)
    del module
    if trim:
        _return_freed_memory()
    return True


@torch.no_grad()
def pack_for_decoding(
    model: nn.Module, tied: Tensor | None = None, rows: int = 1, head_rows: int | None = None,
    verified: Iterable[nn.Module] = (), verified_rows: int | None = None,
) -> None:
    """Lay out every linear layer for products of `rows` rows: pack the float32/bfloat16 CPU ones
    where oneDNN is faster, except one whose weight is `tied`, laid out for products of `head_rows`
    rows (default `rows`; a verification's k+1); unpack those packed for another row count that are
    not. Linear layers inside `verified` (the layers above a fixed exit, which only verifications
    run) are laid out for `verified_rows` rows (default `head_rows`). Idempotent."""
    head_rows = rows if head_rows is None else head_rows
    verified_rows = head_rows if verified_rows is None else verified_rows
    in_verified = {id(m) for block in verified for m in block.modules()}
    for parent, name in module_slots(model, (PackedLinear, nn.Linear)):
        if getattr(parent, name).weight is tied:
            _tied_head_layout(parent, name, head_rows)
        else:
            _lay_out_linear(parent, name, verified_rows if id(parent) in in_verified else rows)


@torch.no_grad()
def lay_out_layers(blocks: Iterable[nn.Module], rows: int) -> bool:
    """Lay out the linear layers inside `blocks` (decoder layers, not a tied head) for products of
    `rows` rows, as pack_for_decoding would; True if any changed. For a decoder that moves the
    layers above its exit between the one-row and the verification layout while decoding: freed
    memory goes back once at the end (per layer it took twice as long; the peak stays a few
    matrices above the weights, measured +77 MiB on SmolLM2)."""
    changed = False
    for block in blocks:
        for parent, name in module_slots(block, (PackedLinear, nn.Linear)):
            changed |= _lay_out_linear(parent, name, rows, trim=False)
    if changed:
        _return_freed_memory()
    return changed


@torch.no_grad()
def lay_out_tied_head(model: nn.Module, tied: Tensor, rows: int) -> None:
    """Lay out only the head tied to `tied` for products of `rows` rows (a decoder switching between
    autoregressive rounds and verifications). Idempotent: no copy when the layout is already right."""
    for parent, name in module_slots(model, nn.Linear):
        if getattr(parent, name).weight is tied:
            _tied_head_layout(parent, name, rows)


@torch.no_grad()
def unpack(model: nn.Module) -> None:
    """Swap every PackedLinear back for an nn.Linear holding the same values."""
    for parent, name in module_slots(model, PackedLinear):
        packed = getattr(parent, name)
        setattr(parent, name, _linear(packed.weight.to_dense(), packed.trainable))
        del packed
        _return_freed_memory()

"""Weight-only int8 and int4 quantisation of a model's linear layers, applied at the edge:
`quantize(model, "int4")` swaps every projection and the LM head for a quantised module, and the
model's forward code does not change.

The kernels are PyTorch's own CPU ones (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`, the
ops torchao dispatches to on CPU; torchao 0.18 no longer ships a CPU int4 layout). They run
fast only with bfloat16 activations, so a quantised model computes in bfloat16: the embedding and
norms are cast, and the KV cache follows the embedding's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from layerskip.errors import LayerSkipError
from layerskip.model.llama import Transformer
from layerskip.model.packing import module_slots, unpack

QUANT_MODES = ("int8", "int4")
ACTIVATION_DTYPE = torch.bfloat16
DEFAULT_GROUP_SIZE = 32  # int4: the block size of GGUF Q4_0/Q4_1, so Q4_1 weights survive exactly
_INT4_ROW_BLOCK = 16  # the int4 CPU kernel packs rows in blocks of 16
_CHUNK_ROWS = 2048  # rows quantised at once: float32 temporaries of a chunk, not of a whole LM head


def _row_chunks(n: int) -> list[slice]:
    return [slice(start, min(start + _CHUNK_ROWS, n)) for start in range(0, n, _CHUNK_ROWS)]


class Int8Linear(nn.Module):
    """y = (x @ q.T) * scale, with q int8 [out, in] and one scale per output row."""

    def __init__(self, qweight: Tensor, scales: Tensor):
        super().__init__()
        self.register_buffer("weight", qweight)  # named like nn.Linear's so `.weight.device` works
        self.register_buffer("scales", scales)

    @classmethod
    def from_float(cls, weight: Tensor) -> Int8Linear:
        q = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
        scales = torch.empty(weight.shape[0], device=weight.device)
        for rows in _row_chunks(weight.shape[0]):
            w = weight[rows].detach().float()
            amax = w.abs().amax(1)
            scales[rows] = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
            q[rows] = torch.round(w / scales[rows, None]).clamp(-127, 127).to(torch.int8)
        return cls(q, scales.to(ACTIVATION_DTYPE))

    def rows(self, ids: Tensor) -> Int8Linear:
        """The same layer restricted to output rows `ids` (a reduced-vocabulary head)."""
        return Int8Linear(self.weight[ids].contiguous(), self.scales[ids].contiguous())

    def forward(self, x: Tensor) -> Tensor:
        y = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), self.weight, self.scales)
        return y.view(*x.shape[:-1], -1)


class Int4Linear(nn.Module):
    """Asymmetric int4 per group of `group_size` inputs: w = q * scale + min, q in 0..15."""

    def __init__(self, packed: Tensor, scales_and_zeros: Tensor, group_size: int, out_features: int):
        super().__init__()
        self.group_size = group_size
        self.out_features = out_features  # the kernel wants a multiple of 16 rows: the rest is padding
        self.register_buffer("weight", packed)  # [padded out, in / 2] uint8, in the kernel's tiling
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # [in / group, padded out, 2]

    @classmethod
    def from_float(cls, weight: Tensor, group_size: int = DEFAULT_GROUP_SIZE) -> Int4Linear:
        out_features, inp = weight.shape
        if inp % group_size:
            raise LayerSkipError(f"int4: input size {inp} is not a multiple of the group size {group_size}")
        out = -(-out_features // _INT4_ROW_BLOCK) * _INT4_ROW_BLOCK
        # Padding rows are zeros: code 0, scale 1, minimum 0.
        q = torch.zeros(out, inp, dtype=torch.int32)
        scale, lo = torch.ones(out, inp // group_size), torch.zeros(out, inp // group_size)
        for rows in _row_chunks(out_features):
            w = weight[rows].detach().float().view(-1, inp // group_size, group_size)
            lo[rows], hi = w.amin(-1), w.amax(-1)
            scale[rows] = torch.where(hi > lo[rows], (hi - lo[rows]) / 15, torch.ones_like(hi))
            q[rows] = torch.round((w - lo[rows, :, None]) / scale[rows, :, None]).clamp(0, 15).view(-1, inp).int()
        # The kernel computes (q - 8) * scale + zero, so zero = min + 8 * scale.
        sz = torch.stack([scale, lo + 8 * scale], dim=-1).transpose(0, 1).contiguous()
        packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
        return cls(packed, sz.to(ACTIVATION_DTYPE), group_size, out_features)

    def rows(self, ids: Tensor) -> Int4Linear:
        """The same layer restricted to output rows `ids` (a reduced-vocabulary head).

        The packed tiling mixes rows, so the rows are read back through the kernel (x = I gives
        the dequantised weight) and quantised again; their values are already on the int4 grid.
        """
        eye = torch.eye(self.weight.shape[1] * 2, dtype=ACTIVATION_DTYPE, device=self.weight.device)
        return Int4Linear.from_float(self(eye).t()[ids], self.group_size)

    def forward(self, x: Tensor) -> Tensor:
        y = torch._weight_int4pack_mm_for_cpu(
            x.reshape(-1, x.shape[-1]), self.weight, self.group_size, self.scales_and_zeros
        )
        return y[:, : self.out_features].view(*x.shape[:-1], -1)


def quantize_linear(linear: nn.Linear, mode: str, group_size: int = DEFAULT_GROUP_SIZE) -> nn.Module:
    if mode == "int8":
        return Int8Linear.from_float(linear.weight)
    if mode == "int4":
        return Int4Linear.from_float(linear.weight, group_size)
    raise LayerSkipError(f"unknown quantisation {mode!r}; choose one of {', '.join(QUANT_MODES)}")


@torch.no_grad()
def quantize_slot(model: nn.Module, name: str, mode: str, group_size: int = DEFAULT_GROUP_SIZE) -> None:
    """Swap the nn.Linear at `name` (e.g. `layers.0.attention.wqkv`) for its quantised form: the
    loader calls this as each weight arrives, so no full-precision model ever exists."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    setattr(parent, child, quantize_linear(getattr(parent, child), mode, group_size))


@torch.no_grad()
def quantize(model: Transformer, mode: str, group_size: int = DEFAULT_GROUP_SIZE) -> Transformer:
    """Quantise every linear layer (projections and LM head) in place; CPU only, inference only.

    The embedding stays in bfloat16 even when the head was tied to it.
    """
    if model.tok_embeddings.weight.device.type != "cpu":
        raise LayerSkipError("weight-only int8/int4 kernels are CPU kernels; load the model on cpu")
    unpack(model)  # plain nn.Linear weights, should the model have decoded already
    model.clear_caches()  # rebuilt in the activation dtype later
    model.to(ACTIVATION_DTYPE)
    for parent, name in module_slots(model, nn.Linear):
        setattr(parent, name, quantize_linear(getattr(parent, name), mode, group_size))
    return model.requires_grad_(False)

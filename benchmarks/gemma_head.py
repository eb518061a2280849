"""Gemma 3 270M's tied head (262144 x 640): one product over 1..8 rows, by layout and dtype.

    python benchmarks/gemma_head.py --threads 1 --rounds 5

Self-speculation pays off only if the full head over a verification's k+1 rows costs about what one
row costs. The variants run side by side, interleaved round by round; medians in ms. A random weight
of the head's shape stands in for the model's (the kernels do not look at the values). bfloat16 with
the weight stored [in, out] is left out: 25x slower than [out, in] here (4.3 s for one row).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

VOCAB, DIM = 262144, 640


def variants(weight: Tensor) -> dict[str, Callable[[Tensor], Tensor]]:
    """name -> product x [rows, DIM] -> [rows, VOCAB]; each holds its own copy of the weight."""
    w32 = weight.float().contiguous()
    w32_t = w32.t().contiguous().t()  # [out, in] shape, [in, out] memory
    packed = torch.ops.mkldnn._reorder_linear_weight(w32, None)
    w16 = weight.bfloat16().contiguous()
    return {
        "f32 [out,in] F.linear": lambda x: F.linear(x, w32),
        "f32 [out,in] (W @ x.T).T": lambda x: (w32 @ x.t()).t(),
        "f32 [in,out] F.linear": lambda x: F.linear(x, w32_t),
        "f32 oneDNN packed": lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], ""),
        "bf16 [out,in] F.linear": lambda x: F.linear(x.bfloat16(), w16),
        "bf16 [out,in] (W @ x.T).T": lambda x: (w16 @ x.bfloat16().t()).t(),
    }


def time_once(fn: Callable[[Tensor], Tensor], x: Tensor) -> float:
    """CPU ms of one product: on a machine shared with other jobs, steadier than wall time."""
    t0 = time.process_time()
    fn(x)
    return (time.process_time() - t0) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rows", default="1,2,3,4,5,8")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fns = variants(torch.randn(VOCAB, DIM) * 0.02)
    rows = [int(r) for r in args.rows.split(",")]
    xs = {r: torch.randn(r, DIM) for r in rows}
    times: dict[tuple[str, int], list[float]] = {(n, r): [] for n in fns for r in rows}
    with torch.inference_mode():
        for fn in fns.values():  # warm-up
            fn(xs[rows[-1]])
        for i in range(args.rounds):
            order = list(fns.items())
            order = order[i % len(order):] + order[: i % len(order)]  # rotate who goes first
            for r in rows:
                for name, fn in order:
                    times[(name, r)].append(time_once(fn, xs[r]))
    print(f"median CPU ms over {args.rounds} rounds, {args.threads} thread(s), {VOCAB} x {DIM}")
    print(f"{'variant':<34}" + "".join(f"{r:>8} row" for r in rows))
    for name in fns:
        print(f"{name:<34}" + "".join(f"{statistics.median(times[(name, r)]):>12.1f}" for r in rows))


if __name__ == "__main__":
    main()

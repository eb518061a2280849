"""Per-layer analysis: how often each layer's early exit agrees with the final layer (top-1, teacher
forced over the dataset's text), its perplexity on that text, and the self-speculative speedup the
cost model predicts for each exit layer E from that agreement and the measured cost of a layer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from layerskip.bench.data import Dataset
from layerskip.generation.costs import LayerCosts, measure_costs
from layerskip.model.llama import Transformer
from layerskip.model.loaded import LoadedModel


@dataclass
class LayerRecord:
    layer: int  # E: the exit after layers 0..E-1
    agreement: float  # top-1 agreement with the final layer, in [0, 1]
    perplexity: float  # of the dataset's text under this exit
    predicted_speedup: float | None  # best over k; None for the last layer
    best_k: int | None


@dataclass
class Analysis:
    records: list[LayerRecord]
    num_tokens: int
    costs: LayerCosts
    recommended_exit_layer: int | None  # None: no E is predicted to beat autoregressive
    recommended_k: int | None
    predicted_speedup: float  # the best predicted speedup over all E and k

    def record(self, layer: int) -> LayerRecord:
        return self.records[layer - 1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["costs"] = self.costs.to_dict()
        return d


def text_ids(loaded: LoadedModel, dataset: Dataset, max_tokens: int) -> list[list[int]]:
    """Token ids of each example's prompt followed by its reference, cut to max_tokens."""
    texts = [e.prompt + (" " + e.reference if e.reference else "") for e in dataset.examples]
    return [ids[:max_tokens] for ids in (loaded.tokenizer(t).input_ids for t in texts) if len(ids) >= 2]


@torch.inference_mode()
def layer_statistics(model: Transformer, sequences: Sequence[list[int]]) -> tuple[list[float], list[float], int]:
    """Per exit layer 1..L: top-1 agreement with the last layer and perplexity, over all positions."""
    n = model.n_layers
    agree, nll = [0.0] * n, [0.0] * n
    positions = targets_total = 0
    device = model.output.weight.device
    for ids in sequences:
        tokens = torch.tensor(ids, device=device)
        h = model.embed(tokens[None])
        tops, losses = [], []
        for layer in range(n):
            h = model.run_layers(h, None, layer, layer + 1)
            logits = model.exit_logits(h)[0].float()  # [T, V]
            tops.append(logits.argmax(-1))
            losses.append(F.cross_entropy(logits[:-1], tokens[1:], reduction="sum"))
        for layer in range(n):
            agree[layer] += float((tops[layer] == tops[-1]).sum())
            nll[layer] += float(losses[layer])
        positions += len(ids)
        targets_total += len(ids) - 1
    agreement = [a / positions for a in agree]
    perplexity = [math.exp(min(x / targets_total, 700.0)) for x in nll]
    return agreement, perplexity, positions


def best_k(costs: LayerCosts, exit_layer: int, alpha: float, max_k: int) -> tuple[int, float]:
    """The k in 1..max_k with the highest predicted speedup, and that speedup."""
    return max(((k, costs.speedup(exit_layer, k, alpha)) for k in range(1, max_k + 1)), key=lambda x: x[1])


def analyze(
    loaded: LoadedModel, dataset: Dataset, max_tokens: int = 256, max_k: int = 8, costs: LayerCosts | None = None
) -> Analysis:
    """Measure agreement and perplexity per layer, then predict the speedup per E with the cost model."""
    model = loaded.model
    agreement, perplexity, n_tokens = layer_statistics(model, text_ids(loaded, dataset, max_tokens))
    costs = costs if costs is not None else measure_costs(model, max_k + 1)
    records = []
    for e in range(1, model.n_layers + 1):
        k, speedup = best_k(costs, e, agreement[e - 1], max_k) if e < model.n_layers else (None, None)
        records.append(LayerRecord(e, agreement[e - 1], perplexity[e - 1], speedup, k))
    best = max(records[:-1], key=lambda r: r.predicted_speedup)
    pays = best.predicted_speedup > 1.0
    return Analysis(records, n_tokens, costs, best.layer if pays else None, best.best_k if pays else None,
                    best.predicted_speedup)

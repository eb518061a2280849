"""The training forward: layer dropout on the way up, early-exit loss at the enabled exits.

One module owns it so that FSDP sees a single root whose forward covers the embedding, every
layer and the shared head, and so that evaluation runs through the same sharded forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerskip.model.llama import Transformer
from layerskip.training import lora
from layerskip.training.config import EarlyExitSection
from layerskip.training.early_exit import IGNORE_INDEX, early_exit_losses
from layerskip.training.layer_dropout import apply_with_dropout


@dataclass
class StepPlan:
    """What the curricula chose for one step: exits with their weights, and drop rates."""

    exits: list[int]
    weights: list[float]
    drop: list[float]  # p_l per layer; ignored in eval mode


@dataclass
class ObjectiveOutput:
    loss: Tensor  # weighted sum of the exit losses (training) or the last layer's loss (eval)
    exit_loss: dict[int, Tensor]
    agreement: dict[int, Tensor] | None = None  # eval only: top-1 agreement with the last layer


class LayerSkipObjective(nn.Module):
    def __init__(self, model: Transformer, cfg: EarlyExitSection):
        super().__init__()
        self.model = model
        self.cfg = cfg

    def hidden_states(self, tokens: Tensor, plan: StepPlan) -> dict[int, Tensor]:
        """Hidden states [B, T, D] at the plan's exits, with layer dropout in training mode."""
        m = self.model
        ctx = m.attention_context(None, tokens.shape[1], tokens.device)
        h, out = m.embed(tokens), {}
        wanted = set(plan.exits)
        for i, layer in enumerate(m.layers):
            p = plan.drop[i] if self.training else 0.0
            h = apply_with_dropout(lambda x, layer=layer: layer(x, ctx), h, p)
            if i + 1 in wanted:
                out[i + 1] = h
        return out

    def teacher_hidden(self, tokens: Tensor, hidden: dict[int, Tensor]) -> Tensor | None:
        """The distillation target's last-layer hidden states, without gradient."""
        if self.cfg.distill_weight == 0 or not self.cfg.enabled:
            return None
        last = self.model.n_layers
        if self.cfg.teacher == "self":
            return hidden[last].detach()
        with torch.no_grad(), lora.adapters_disabled(self.model):
            return self.model.run_layers(self.model.embed(tokens), None)

    def forward(self, tokens: Tensor, labels: Tensor, plan: StepPlan) -> ObjectiveOutput:
        hidden = self.hidden_states(tokens, plan)
        if not self.training:
            return self._evaluate(hidden, labels)
        teacher = self.teacher_hidden(tokens, hidden)
        losses = early_exit_losses(self.model.exit_logits, hidden, labels, teacher, self.cfg, self.model.n_layers)
        loss = sum(w * losses[e] for e, w in zip(plan.exits, plan.weights))
        return ObjectiveOutput(loss, losses)

    @torch.no_grad()
    def _evaluate(self, hidden: dict[int, Tensor], labels: Tensor) -> ObjectiveOutput:
        """Per-exit cross-entropy and top-1 agreement with the last layer, chunked over tokens."""
        labels = labels.flatten()
        flat = {e: h.flatten(0, 1) for e, h in hidden.items()}
        valid = labels != IGNORE_INDEX
        loss = {e: h.new_zeros((), dtype=torch.float32) for e, h in flat.items()}  # on the loss's device
        agree = {e: h.new_zeros((), dtype=torch.float32) for e, h in flat.items()}
        step = self.cfg.chunk_tokens
        for i in range(0, labels.shape[0], step):
            sl = slice(i, i + step)
            v, y = valid[sl], labels[sl][valid[sl]]
            last = self.model.exit_logits(flat[self.model.n_layers][sl]).float()[v]
            target = last.argmax(-1)
            for e, h in flat.items():
                x = last if e == self.model.n_layers else self.model.exit_logits(h[sl]).float()[v]
                loss[e] += F.cross_entropy(x, y, reduction="sum")
                agree[e] += (x.argmax(-1) == target).sum()
        n = valid.sum().clamp(min=1)
        loss = {e: x / n for e, x in loss.items()}
        return ObjectiveOutput(loss[self.model.n_layers], loss, {e: x / n for e, x in agree.items()})


"""Self-speculative decoding: draft with layers 0..E-1, verify with layers E..L-1.

Both phases share the model's weights, its one KV cache and its exit-query cache. A round:
  draft:  the pending token and each draft go through layers 0..E-1 (their layer-E states are
          kept in the exit-query cache); the early exit proposes up to k tokens.
  verify: layers E..L-1 run once over the k+1 cached states at positions pos..pos+k.
  accept: the longest agreeing prefix plus one token from the full model. Rejected positions
          are rolled back by not advancing `pos`; their cache slots are overwritten next round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from layerskip.generation.clock import PhaseClock
from layerskip.generation.config import GenerationConfig
from layerskip.generation.draft_vocab import DraftHead, configured_draft_head
from layerskip.generation.output import ACCEPTED, SpeculationStats, TokenSink
from layerskip.generation.sampling import LogitAdjuster, next_token, processed_probs, sample
from layerskip.generation.steps import Steps, prefill
from layerskip.model.llama import Transformer, positions


@dataclass
class Draft:
    tokens: Tensor  # [n] drafted token ids
    probs: Tensor | None  # [n, V] draft distributions q (sampling only)


def draft(
    model: Transformer,
    steps: Steps,
    token: Tensor,
    pos: Tensor,
    exit_layer: int,
    max_drafts: int,
    cfg: GenerationConfig,
    generator: torch.Generator | None,
    head: DraftHead,
    adjust: LogitAdjuster,
) -> Draft:
    """Run the pending token (at `pos` [1, 1]) and up to `max_drafts` drafts through the early layers."""
    cache = model.exit_query_cache
    tokens: list[Tensor] = []
    probs: list[Tensor] = []
    threshold = cfg.draft_confidence_threshold
    for i in range(max_drafts):
        h, logits = steps.draft(model, head, token.view(1, 1), pos + i, exit_layer)
        cache.write(i, h)
        logits = adjust(logits[0], tokens, head.ids)  # draft i sees drafts[:i]
        if cfg.greedy:
            token = head.to_vocab(logits.argmax(-1))
            confidence = logits.softmax(-1).max() if threshold is not None else None
        else:
            q = processed_probs(logits, cfg)
            token = head.to_vocab(sample(q, generator))
            probs.append(head.full_probs(q, model.config.vocab_size))
            confidence = q.max() if threshold is not None else None
        tokens.append(token)
        if confidence is not None and float(confidence) < threshold:
            break
    # The last draft still needs its early-layer pass; the verifier runs its later layers.
    cache.write(len(tokens), steps.early(model, token.view(1, 1), pos + len(tokens), exit_layer))
    stacked = torch.stack(tokens) if tokens else token.new_empty(0)
    return Draft(stacked, torch.stack(probs) if probs else None)


def verify(model: Transformer, steps: Steps, pos: Tensor, n: int, exit_layer: int) -> Tensor:
    """Full-model logits [n, V] for the n pending states at `pos` [1, n], running only layers E..L-1."""
    return steps.verify(model, model.exit_query_cache.read(n), pos, exit_layer)[0]


def accept_greedy(d: Draft, logits: Tensor) -> tuple[int, int]:
    """(number of accepted drafts, the full model's next token), with one host sync."""
    target = logits.argmax(-1)
    n_acc = (d.tokens == target[:-1]).int().cumprod(0).sum()
    n, tok = torch.stack([n_acc, target[n_acc]]).tolist()
    return n, tok


def accept_sampled(
    d: Draft, logits: Tensor, cfg: GenerationConfig, generator: torch.Generator | None
) -> tuple[int, int]:
    """Speculative sampling (Leviathan et al. / Chen et al.): lossless w.r.t. the target p.

    Draft i is accepted with probability min(1, p_i(d_i) / q_i(d_i)); at the first rejection the
    token is drawn from norm(max(p_i - q_i, 0)); if all are accepted, a bonus token from p_n.
    """
    p = processed_probs(logits, cfg)  # [n, V]
    n_drafts = d.tokens.shape[0]
    if n_drafts:
        idx = d.tokens[:, None]
        ratio = p[:-1].gather(-1, idx)[:, 0] / d.probs.gather(-1, idx)[:, 0]
        u = torch.rand(n_drafts, generator=generator, device=p.device)
        n_acc = (u < ratio).int().cumprod(0).sum()
        residual = (p[:-1] - d.probs).clamp_min(0)
        total = residual.sum(-1, keepdim=True)
        residual = torch.where(total > 0, residual / total.clamp_min(1e-30), p[:-1])
        dists = torch.cat([residual, p[-1:]])
    else:
        n_acc, dists = torch.zeros((), dtype=torch.long, device=p.device), p
    choices = sample(dists, generator)
    n, tok = torch.stack([n_acc.long(), choices[n_acc]]).tolist()
    return n, tok


def next_k(k_max: int, n_drafted: int, n_accepted: int) -> int:
    """Adaptive k: one more after a fully accepted draft, what was accepted (+1) otherwise."""
    return min(k_max, n_drafted + 1) if n_accepted == n_drafted else max(1, n_accepted + 1)


def decode(
    model: Transformer,
    prompt: Tensor,
    cfg: GenerationConfig,
    sink: TokenSink,
    generator: torch.Generator | None,
    steps: Steps,
    exit_layer: int,
    stats: SpeculationStats,
    adjust: LogitAdjuster,
) -> None:
    """Generate into `sink` by draft/verify rounds until it says stop (one host sync per round).
    `adjust` applies penalties and logit_bias to drafts and verification alike."""
    head = configured_draft_head(model, cfg)
    device, n = prompt.device, prompt.shape[0]
    token = next_token(adjust(prefill(model, prompt[None], positions(0, n, device))[0]), cfg, generator)
    if sink.push([int(token)]):
        return
    pos = positions(n, 1, device)  # the pending token's position, kept on the device
    offsets = positions(0, cfg.num_speculations + 1, device)
    clock = PhaseClock(device)
    k = cfg.num_speculations
    while True:
        t0 = clock.mark()
        d = draft(model, steps, token, pos, exit_layer, min(k, sink.remaining - 1), cfg, generator, head, adjust)
        t1 = clock.mark()
        n_drafts = d.tokens.shape[0]
        logits = verify(model, steps, pos + offsets[:, : n_drafts + 1], n_drafts + 1, exit_layer)
        logits = adjust.rows(logits, d.tokens)  # row i sees drafts[:i]
        if cfg.greedy:
            n_acc, new = accept_greedy(d, logits)
        else:
            n_acc, new = accept_sampled(d, logits, cfg, generator)
        stats.draft_time_s += clock.seconds(t0, t1)
        stats.verify_time_s += clock.seconds(t1, clock.mark())
        stats.num_drafted += n_drafts
        stats.num_accepted += n_acc
        stats.num_verifications += 1
        drafted = d.tokens.tolist()
        if sink.push(drafted[:n_acc], ACCEPTED):
            return
        sink.show_rejected(drafted[n_acc:])
        if sink.push([new]):
            return
        pos = pos + (n_acc + 1)
        token = torch.tensor(new, device=device)
        if cfg.adaptive_k:
            k = next_k(cfg.num_speculations, n_drafts, n_acc)

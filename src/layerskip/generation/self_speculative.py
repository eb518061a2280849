"""Self-speculative decoding: draft with layers 0..E-1, verify with layers E..L-1.

Both phases share the model's weights, its one KV cache and its exit-query cache. A round:
  draft:  the pending token and each draft go through layers 0..E-1 (their layer-E states are
          kept in the exit-query cache); the early exit proposes up to k tokens.
  verify: layers E..L-1 run once over the k+1 cached states at positions pos..pos+k.
  accept: the longest agreeing prefix plus one token from the full model. Rejected positions
          are rolled back by not advancing `pos`; their cache slots are overwritten next round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from layerskip.generation.autoregressive import prefill
from layerskip.generation.config import GenerationConfig
from layerskip.generation.draft_vocab import DraftHead, configured_draft_head
from layerskip.generation.output import ACCEPTED, SpeculationStats, TokenSink
from layerskip.generation.sampling import next_token, processed_probs, sample
from layerskip.model.llama import Transformer


@dataclass
class Draft:
    tokens: Tensor  # [n] drafted token ids
    probs: Tensor | None  # [n, V] draft distributions q (sampling only)


def draft(
    model: Transformer,
    token: Tensor,
    pos: int,
    exit_layer: int,
    max_drafts: int,
    cfg: GenerationConfig,
    generator: torch.Generator | None,
    head: DraftHead,
) -> Draft:
    """Run the pending token and up to `max_drafts` drafts through the early layers."""
    cache = model.exit_query_cache
    tokens: list[Tensor] = []
    probs: list[Tensor] = []
    threshold = cfg.draft_confidence_threshold
    for i in range(max_drafts + 1):
        h = model.run_layers(model.embed(token.view(1, 1)), pos + i, 0, exit_layer)
        cache.write(i, h)
        if i == max_drafts:
            break
        logits = head.logits(model, h)[0, -1]
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
            max_drafts = i + 1  # the last draft still needs its early-layer pass
    stacked = torch.stack(tokens) if tokens else token.new_empty(0)
    return Draft(stacked, torch.stack(probs) if probs else None)


def verify(model: Transformer, pos: int, n: int, exit_layer: int) -> Tensor:
    """Full-model logits [n, V] for the n pending states, running only layers E..L-1."""
    h = model.run_layers(model.exit_query_cache.read(n), pos, exit_layer, None)
    return model.exit_logits(h)[0]


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
    exit_layer: int,
    stats: SpeculationStats,
) -> None:
    """Generate into `sink` by draft/verify rounds until it says stop."""
    head = configured_draft_head(model, cfg)
    token = next_token(prefill(model, prompt), cfg, generator)
    pos = prompt.shape[0]
    if sink.push([int(token)]):
        return
    k = cfg.num_speculations
    while True:
        n_drafts = min(k, sink.remaining - 1)
        t0 = time.perf_counter()
        d = draft(model, token, pos, exit_layer, n_drafts, cfg, generator, head)
        t1 = time.perf_counter()
        logits = verify(model, pos, d.tokens.shape[0] + 1, exit_layer)
        if cfg.greedy:
            n_acc, new = accept_greedy(d, logits)
        else:
            n_acc, new = accept_sampled(d, logits, cfg, generator)
        stats.draft_time_s += t1 - t0
        stats.verify_time_s += time.perf_counter() - t1
        stats.num_drafted += d.tokens.shape[0]
        stats.num_accepted += n_acc
        stats.num_verifications += 1
        drafted = d.tokens.tolist()
        if sink.push(drafted[:n_acc], ACCEPTED):
            return
        sink.show_rejected(drafted[n_acc:])
        if sink.push([new]):
            return
        pos += n_acc + 1
        token = torch.tensor(new, device=prompt.device)
        if cfg.adaptive_k:
            k = next_k(cfg.num_speculations, d.tokens.shape[0], n_acc)

"""The generation entry point shared by the CLI, server, benchmarks and lm-eval."""

from __future__ import annotations

import time
from typing import Any

import torch

from layerskip.errors import LayerSkipError
from layerskip.generation import autoregressive, self_speculative
from layerskip.generation.config import GenerationConfig
from layerskip.generation.output import REJECTED, GenerationResult, SpeculationStats, TokenCallback, TokenSink
from layerskip.generation.sampling import LogitAdjuster, make_generator
from layerskip.generation.steps import prepare_for_decoding, steps_for
from layerskip.model.loaded import LoadedModel

Prompt = str | list[dict[str, str]]


def encode_prompt(tokenizer: Any, prompt: Prompt, chat: bool) -> list[int]:
    """Token ids of a plain prompt, or of chat messages rendered by the model's chat template."""
    if isinstance(prompt, str) and not prompt.strip():
        raise LayerSkipError("prompt is empty")
    if not chat:
        if not isinstance(prompt, str):
            raise LayerSkipError("a list of messages needs chat mode")
        return tokenizer(prompt).input_ids
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if not messages:
        raise LayerSkipError("chat has no messages")
    if not getattr(tokenizer, "chat_template", None):
        raise LayerSkipError("this model's tokenizer has no chat template; run without --chat")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


def model_eos_ids(loaded: LoadedModel) -> set[int]:
    ids = set(loaded.config.eos_token_ids)
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return ids


def generate(
    loaded: LoadedModel, prompt: Prompt, cfg: GenerationConfig, on_tokens: TokenCallback | None = None
) -> GenerationResult:
    """Generate a continuation of `prompt` (or a chat reply when `cfg.chat`)."""
    ids = encode_prompt(loaded.tokenizer, prompt, cfg.chat)
    return generate_ids(loaded, ids, cfg, on_tokens)


def generate_ids(
    loaded: LoadedModel, prompt_ids: list[int], cfg: GenerationConfig, on_tokens: TokenCallback | None = None
) -> GenerationResult:
    """Generate from token ids; `on_tokens(ids, kind)` streams tokens as they are committed."""
    model, mcfg = loaded.model, loaded.config
    if not prompt_ids:
        raise LayerSkipError("prompt is empty")
    needed = len(prompt_ids) + cfg.max_new_tokens + 1
    if needed > mcfg.max_seq_len:
        raise LayerSkipError(
            f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({cfg.max_new_tokens}) exceeds "
            f"the model's context of {mcfg.max_seq_len} tokens"
        )
    exit_layer = cfg.resolve_exit_layer(mcfg.n_layers, mcfg.recommended_exit_layer)
    eos = set() if cfg.ignore_eos else model_eos_ids(loaded) | set(cfg.eos_token_ids)
    device = model.output.weight.device
    adjust = LogitAdjuster(cfg, mcfg.vocab_size, device)
    sink = TokenSink(loaded.tokenizer, cfg.max_new_tokens, eos, cfg.stop_strings, _counting(adjust, on_tokens))
    generator = make_generator(cfg, device)
    speculative = cfg.speculative
    prepare_for_decoding(model, needed, exit_query_len=cfg.num_speculations + 1 if speculative else 0)
    steps = steps_for(model, loaded.compile)
    prompt = torch.tensor(prompt_ids, device=device)
    stats = SpeculationStats()
    start = time.perf_counter()
    with torch.inference_mode():
        if speculative:
            self_speculative.decode(model, prompt, cfg, sink, generator, steps, exit_layer, stats, adjust)
        else:
            autoregressive.decode(model, prompt, cfg, sink, generator, steps, adjust, exit_layer)
    end = time.perf_counter()
    first = sink.first_token_time or end
    return GenerationResult(
        text=sink.text(),
        token_ids=sink.ids,
        prompt_tokens=len(prompt_ids),
        finish_reason=sink.finish_reason or "length",
        strategy=cfg.strategy,
        exit_layer=exit_layer,
        num_speculations=cfg.num_speculations if speculative else None,
        time_to_first_token_s=first - start,
        decode_time_s=end - first,
        total_time_s=end - start,
        stats=stats,
    )


def _counting(adjust: LogitAdjuster, on_tokens: TokenCallback | None) -> TokenCallback | None:
    """`on_tokens` that also counts committed tokens for the penalties (when there are any)."""
    if not adjust.active:
        return on_tokens

    def count_then_forward(ids: list[int], kind: str) -> None:
        if kind != REJECTED:
            adjust.commit(ids)
        if on_tokens is not None:
            on_tokens(ids, kind)

    return count_then_forward

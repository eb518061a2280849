"""The generation entry point shared by the CLI, server, benchmarks and lm-eval."""

from __future__ import annotations

from typing import Any

from layerskip.errors import LayerSkipError
from layerskip.generation.batch import BatchDecoder, BatchPlan, generate_batch_ids, model_eos_ids
from layerskip.generation.config import GenerationConfig
from layerskip.generation.output import GenerationResult, TokenCallback
from layerskip.model.loaded import LoadedModel

__all__ = ["encode_prompt", "generate", "generate_batch", "generate_batch_ids", "generate_ids", "model_eos_ids"]

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


def generate(
    loaded: LoadedModel, prompt: Prompt, cfg: GenerationConfig, on_tokens: TokenCallback | None = None
) -> GenerationResult:
    """Generate a continuation of `prompt` (or a chat reply when `cfg.chat`)."""
    ids = encode_prompt(loaded.tokenizer, prompt, cfg.chat)
    return generate_ids(loaded, ids, cfg, on_tokens)


def generate_ids(
    loaded: LoadedModel, prompt_ids: list[int], cfg: GenerationConfig, on_tokens: TokenCallback | None = None
) -> GenerationResult:
    """Generate from token ids; `on_tokens(ids, kind)` streams tokens as they are committed.

    One sequence is a batch of one: the same decoder and steps as `generate_batch_ids`.
    """
    mcfg = loaded.config
    if not prompt_ids:
        raise LayerSkipError("prompt is empty")
    needed = len(prompt_ids) + cfg.max_new_tokens + 1
    if needed > mcfg.max_seq_len:
        raise LayerSkipError(
            f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({cfg.max_new_tokens}) exceeds "
            f"the model's context of {mcfg.max_seq_len} tokens"
        )
    plan = BatchPlan.of(cfg, mcfg.n_layers, mcfg.recommended_exit_layer)
    decoder = BatchDecoder(loaded, 1, needed, plan)
    request = decoder.join(prompt_ids, cfg, on_tokens)
    while decoder.active:
        decoder.step()
    return decoder.take_finished()[request]


def generate_batch(
    loaded: LoadedModel, prompts: list[Prompt], cfgs: GenerationConfig | list[GenerationConfig]
) -> list[GenerationResult]:
    """Continuations of several prompts (or chat replies), decoded together; one result per prompt."""
    cfg_list = cfgs if isinstance(cfgs, list) else [cfgs] * len(prompts)
    if len(cfg_list) != len(prompts):
        raise LayerSkipError(f"{len(prompts)} prompts but {len(cfg_list)} generation configs")
    ids = [encode_prompt(loaded.tokenizer, p, c.chat) for p, c in zip(prompts, cfg_list, strict=True)]
    return generate_batch_ids(loaded, ids, cfg_list)

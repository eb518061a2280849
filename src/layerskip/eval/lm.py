"""The lm-eval model `layerskip`: our engine behind lm-evaluation-harness.

Scoring (`loglikelihood`, `loglikelihood_rolling`) runs at the depth the strategy generates
from: the early exit E for `early_exit`, every layer otherwise (self-speculation is lossless, so
its distribution is the full model's). `generate_until` goes through `generate_ids` with the
chosen strategy and sums its speculation figures, which `get_model_info` hands to lm-eval's
results.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import lm_eval.models  # noqa: F401  lm-eval registers its own models only while its registry is empty
import torch
from lm_eval import utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import normalize_gen_kwargs
from tqdm import tqdm

from layerskip.errors import LayerSkipError
from layerskip.eval.scoring import score_continuations
from layerskip.eval.stats import generation_figures
from layerskip.generation.config import GenerationConfig
from layerskip.generation.generate import generate_ids
from layerskip.generation.output import GenerationTotals
from layerskip.model.loaded import LoadedModel
from layerskip.model.loading import load_model

log = logging.getLogger(__name__)

# lm-eval generation kwargs that map one to one onto GenerationConfig fields.
_SAMPLING_KWARGS = ("do_sample", "temperature", "top_k", "top_p", "seed")

Request = tuple[tuple[str, str] | None, list[int], list[int]]  # (strings or None, context ids, continuation ids)


@register_model("layerskip")
class LayerSkipLM(TemplateLM):
    """`--model layerskip --model_args pretrained=M,strategy=S,exit_layer=E,num_speculations=K`."""

    def __init__(
        self,
        pretrained: str | LoadedModel | None = None,
        strategy: str = GenerationConfig.strategy,
        exit_layer: int | None = None,
        num_speculations: int = GenerationConfig.num_speculations,
        dtype: str = "float32",
        device: str | None = None,
        adapter: str | None = None,
        compile: bool = False,
        draft_confidence_threshold: float | None = None,
        adaptive_k: bool = False,
        draft_vocab_size: int | None = None,
        draft_vocab_file: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,  # lm-eval always passes it; it only applies to batch_size=auto
        max_length: int | None = None,
        max_gen_toks: int = 256,
        add_bos_token: bool | None = None,
    ):
        super().__init__()
        self.batch_size = _batch_size(batch_size)
        if max_gen_toks < 1:
            raise LayerSkipError(f"max_gen_toks must be >= 1, got {max_gen_toks}")
        requested = GenerationConfig(
            strategy=strategy, exit_layer=exit_layer, num_speculations=num_speculations,
            draft_confidence_threshold=draft_confidence_threshold, adaptive_k=adaptive_k,
            draft_vocab_size=draft_vocab_size, draft_vocab_file=draft_vocab_file,
        )
        if isinstance(pretrained, LoadedModel):  # already loaded, e.g. shared by tests
            self.loaded = pretrained
        else:
            self.loaded = load_model(pretrained, dtype, _device(device), adapter=adapter, compile=compile)
        cfg = self.loaded.config
        resolved = requested.resolve_exit_layer(cfg.n_layers, cfg.recommended_exit_layer)
        self.generation = replace(requested, exit_layer=resolved)
        self.score_exit_layer = self.generation.exit_layer if strategy == "early_exit" else None
        self._max_length = max_length or cfg.max_seq_len
        self._max_gen_toks = max_gen_toks
        self.add_bos_token = add_bos_token
        self.tokenizer = self.loaded.tokenizer
        self.totals = GenerationTotals()
        self._device = self.loaded.model.output.weight.device

    # --- what TemplateLM needs -------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """Conditions the first token of an empty context or a rolling window (as lm-eval's hf)."""
        bos = self.tokenizer.bos_token_id
        return self.eot_token_id if bos is None else bos

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """The tokenizer's own special-token default unless add_bos_token is set, and never a
        second BOS in front of a string that already starts with one (as lm-eval's hf)."""
        add = self.add_bos_token if add_special_tokens is None else add_special_tokens
        if add_special_tokens is None and string.startswith(self.tokenizer.decode(self.prefix_token_id)):
            add = False
        return self.tokenizer.encode(string, **({} if add is None else {"add_special_tokens": add}))

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    # --- requests --------------------------------------------------------------------------

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        with tqdm(total=len(requests), disable=disable_tqdm, desc="loglikelihood") as bar:
            scores = score_continuations(
                self.loaded.model, [(ctx, cont) for _, ctx, cont in requests], exit_layer=self.score_exit_layer,
                batch_size=self.batch_size, max_length=self.max_length, on_batch=bar.update,
            )
        answers = [(s.logprob, s.is_greedy) for s in scores]
        for (strings, _, _), answer in zip(requests, answers):
            if strings is not None:  # rolling windows are cached per document instead
                self.cache_hook.add_partial("loglikelihood", strings, answer)
        return answers

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Whole-document log-likelihood from disjoint windows of at most max_length tokens."""
        windows: list[Request] = []
        owners: list[int] = []
        for i, (text,) in enumerate(req.args for req in requests):
            rolling = utils.get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1,
            )
            for ctx, cont in map(utils.make_disjoint_window, rolling):
                windows.append((None, ctx, cont))
                owners.append(i)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm)):
            totals[i] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """One request at a time through the chosen strategy; stop sequences become stop strings."""
        answers = []
        for context, gen_kwargs in tqdm([req.args for req in requests], disable=disable_tqdm, desc="generate"):
            cfg = self._request_config(gen_kwargs)
            ids = self.tok_encode(context)[-(self.max_length - cfg.max_new_tokens - 1) :] or [self.prefix_token_id]
            result = generate_ids(self.loaded, ids, cfg)
            self.totals.add(result)
            answers.append(result.text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), result.text)
        return answers

    def _request_config(self, gen_kwargs: dict[str, Any]) -> GenerationConfig:
        kwargs = dict(normalize_gen_kwargs(gen_kwargs, self.max_gen_toks))
        until, max_new = kwargs.pop("until"), kwargs.pop("max_gen_toks")
        unknown = sorted(set(kwargs) - set(_SAMPLING_KWARGS))
        if unknown:
            raise LayerSkipError(f"generation kwargs not supported by layerskip: {', '.join(unknown)}")
        if max_new > self.max_length - 2:  # leave room for at least one prompt token
            raise LayerSkipError(f"max_gen_toks ({max_new}) must be below the context length ({self.max_length}) - 1")
        if kwargs.get("do_sample") and kwargs.get("seed") is None:
            kwargs["seed"] = int(torch.randint(2**31, ()))  # reproducible under lm-eval's --seed
        return replace(self.generation, max_new_tokens=max_new, stop_strings=[s for s in until if s], **kwargs)

    def get_model_info(self) -> dict[str, Any]:
        """Added by lm-eval to results["config"] once every request has run."""
        g = self.generation
        info: dict[str, Any] = {
            "model": self.loaded.name,
            "path": str(self.loaded.path),
            "dtype": str(self.loaded.model.output.weight.dtype).removeprefix("torch."),
            "strategy": g.strategy,
            "exit_layer": g.exit_layer,
            "scoring_exit_layer": self.score_exit_layer or self.loaded.config.n_layers,
            "num_layers": self.loaded.config.n_layers,
        }
        if g.speculative:
            info["num_speculations"] = g.num_speculations
        if self.totals.num_generations:
            info["generation"] = generation_figures(self.totals)
        return {"layerskip": info}


def _batch_size(value: int | str) -> int:
    try:
        size = int(value)
    except ValueError:
        raise LayerSkipError(f"batch_size must be a number for layerskip (no 'auto'), got {value!r}") from None
    if size < 1:
        raise LayerSkipError(f"batch_size must be >= 1, got {size}")
    return size


def _device(device: str | None) -> str:
    """lm-eval's CLI asks for cuda:0 by default; run on the CPU when there is no GPU."""
    if device is None or (device.startswith("cuda") and not torch.cuda.is_available()):
        if device is not None:
            log.warning("device %s is not available; using cpu", device)
        return "cpu"
    return device

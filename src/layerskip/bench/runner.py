"""The interleaved benchmark runner: several generation settings ("arms") on the same prompts in
one process. Each prompt runs every arm back to back, in an order rotated per prompt, so that load
from other processes and thermal drift hit all arms alike; a warm-up pass comes first. With a batch
size N, prompts run N at a time (generate_batch_ids) and each arm also reports its aggregate tokens/s."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from layerskip.bench.data import Dataset
from layerskip.bench.metrics import quality
from layerskip.errors import LayerSkipError
from layerskip.generation.batch import generate_batch_ids
from layerskip.generation.config import GenerationConfig, is_speculative
from layerskip.generation.generate import Prompt, encode_prompt, generate
from layerskip.generation.output import GenerationResult, GenerationTotals, cut_at_stop_strings
from layerskip.model.loaded import LoadedModel

ProgressCallback = Callable[[int, int], None]  # (generations done, generations in all)


@dataclass
class Arm:
    name: str
    config: GenerationConfig


def arm_name(cfg: GenerationConfig, exit_layer: int | None) -> str:
    if cfg.strategy == "autoregressive":
        return "autoregressive"
    if cfg.strategy == "early_exit":
        return f"early_exit E={exit_layer}"
    if exit_layer is None:  # chosen online (controller.py); k is the most it may choose
        return f"self_speculative E=auto k<={cfg.num_speculations}"
    return f"self_speculative E={exit_layer} k={cfg.num_speculations}"


@dataclass
class Sample:
    arm: str
    example_id: str
    result: GenerationResult
    prediction: str  # the answer cut at the dataset's stop strings, as scored
    batch: int = 0  # the batch of prompts it ran in


def aggregate_tokens_per_s(samples: list[Sample]) -> float:
    """Generated tokens over the batches' wall time, prefills included: a batch lasts as long as its
    first-joined row, whose clock starts before every prefill and stops with the batch's end."""
    walls: dict[int, float] = {}
    for s in samples:
        walls[s.batch] = max(walls.get(s.batch, 0.0), s.result.total_time_s)
    seconds = sum(walls.values())
    return sum(s.result.num_new_tokens for s in samples) / seconds if seconds > 0 else 0.0


@dataclass
class ArmSummary:
    name: str
    strategy: str
    exit_layer: int | None
    num_speculations: int | None
    speed: GenerationTotals
    quality: dict[str, float]
    speedup: float | None  # decode tokens/s over the autoregressive arm's
    aggregate_tokens_per_s: float = 0.0  # all rows' tokens per second of wall time

    def row(self) -> dict[str, Any]:
        """One flat record for CSV and JSON."""
        s, spec = self.speed, is_speculative(self.strategy)
        return {
            "arm": self.name,
            "strategy": self.strategy,
            "exit_layer": self.exit_layer,
            "num_speculations": self.num_speculations,
            "num_generations": s.num_generations,
            "new_tokens": s.new_tokens,
            "decode_tokens_per_s": s.decode_tokens_per_s,
            "ms_per_token": s.ms_per_token,
            "total_tokens_per_s": s.total_tokens_per_s,
            "aggregate_tokens_per_s": self.aggregate_tokens_per_s,
            "speedup": self.speedup,
            "acceptance_rate": s.stats.acceptance_rate if spec else None,
            "mean_accepted_length": s.stats.mean_accepted_length if spec else None,
            **self.quality,
        }


@dataclass
class Mismatch:
    example_id: str
    arm: str
    first_difference: int  # index of the first differing new token
    autoregressive_text: str
    text: str


@dataclass
class BenchReport:
    dataset: str
    metric: str
    arms: list[ArmSummary]
    samples: list[Sample]
    mismatches: list[Mismatch] | None = None  # None: no check was asked for
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self, name: str) -> ArmSummary:
        return next(a for a in self.arms if a.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "metric": self.metric,
            **self.extra,
            "summary": [a.row() for a in self.arms],
            "samples": [sample_row(s) for s in self.samples],
            "check": None if self.mismatches is None else {
                "equal": not self.mismatches,
                "mismatches": [vars(m) for m in self.mismatches],
            },
        }


def sample_row(s: Sample) -> dict[str, Any]:
    r = s.result
    return {
        "arm": s.arm,
        "example_id": s.example_id,
        "new_tokens": r.num_new_tokens,
        "decode_tokens_per_s": r.decode_tokens_per_second,
        "time_to_first_token_s": r.time_to_first_token_s,
        "total_time_s": r.total_time_s,
        "acceptance_rate": r.stats.acceptance_rate if r.speculative else None,
        "finish_reason": r.finish_reason,
        "prediction": s.prediction,
    }


def make_arms(loaded: LoadedModel, configs: list[GenerationConfig]) -> list[Arm]:
    """Named arms; the exit layer is resolved against the model so that names are explicit."""
    mcfg = loaded.config
    arms = []
    for cfg in configs:
        e = cfg.resolve_exit_layer(mcfg.n_layers, mcfg.recommended_exit_layer)
        arms.append(Arm(arm_name(cfg, e), replace(cfg, exit_layer=e)))
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise LayerSkipError(f"duplicate settings: {', '.join(names)}")
    return arms


def run_arms(
    loaded: LoadedModel,
    dataset: Dataset,
    arms: list[Arm],
    warmup: int = 1,
    on_progress: ProgressCallback | None = None,
    batch_size: int = 1,
) -> dict[str, list[Sample]]:
    """Generate every example with every arm, interleaved, `batch_size` prompts at a time, after
    `warmup` unrecorded batches."""
    if batch_size < 1:
        raise LayerSkipError(f"batch size must be >= 1, got {batch_size}")
    examples = dataset.examples
    batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    for batch in batches[:warmup]:
        for arm in arms:
            short = replace(arm.config, max_new_tokens=min(8, arm.config.max_new_tokens))
            generate_all(loaded, [e.prompt for e in batch], short)
    samples: dict[str, list[Sample]] = {a.name: [] for a in arms}
    total, done = len(examples) * len(arms), 0
    for b, batch in enumerate(batches):
        shift = b % len(arms)
        for arm in arms[shift:] + arms[:shift]:
            for example, result in zip(batch, generate_all(loaded, [e.prompt for e in batch], arm.config), strict=True):
                # stops match from the second character on, so an answer that starts with one is not emptied
                prediction = cut_at_stop_strings(result.text, dataset.stop_strings, start=1)
                samples[arm.name].append(Sample(arm.name, example.id, result, prediction, b))
            done += len(batch)
            if on_progress is not None:
                on_progress(done, total)
    return samples


def generate_all(loaded: LoadedModel, prompts: list[Prompt], cfg: GenerationConfig) -> list[GenerationResult]:
    """One prompt: generate(); several: one batch."""
    if len(prompts) == 1:
        return [generate(loaded, prompts[0], cfg)]
    return generate_batch_ids(loaded, [encode_prompt(loaded.tokenizer, p, cfg.chat) for p in prompts], cfg)


def summarize(dataset: Dataset, arms: list[Arm], samples: dict[str, list[Sample]]) -> list[ArmSummary]:
    refs = [e.reference for e in dataset.examples]
    speeds = {name: GenerationTotals.of(s.result for s in ss) for name, ss in samples.items()}
    base = next((speeds[a.name] for a in arms if a.config.strategy == "autoregressive"), None)
    out = []
    for arm in arms:
        speed = speeds[arm.name]
        speedup = None
        if base is not None and base.decode_tokens_per_s > 0:
            speedup = speed.decode_tokens_per_s / base.decode_tokens_per_s
        preds = [s.prediction for s in samples[arm.name]]
        cfg = arm.config
        k = cfg.num_speculations if cfg.speculative else None
        out.append(ArmSummary(arm.name, cfg.strategy, cfg.exit_layer, k, speed,
                              quality(dataset.metric, preds, refs), speedup,
                              aggregate_tokens_per_s(samples[arm.name])))
    return out


def check_equal(arms: list[Arm], samples: dict[str, list[Sample]]) -> list[Mismatch]:
    """Greedy self-speculative outputs that differ from greedy autoregressive, prompt by prompt."""
    base = next((a for a in arms if a.config.strategy == "autoregressive"), None)
    if base is None:
        raise LayerSkipError("the check compares against autoregressive: include it in the strategies")
    mismatches = []
    for arm in arms:
        if not arm.config.speculative:
            continue
        for ref, got in zip(samples[base.name], samples[arm.name], strict=True):
            a, b = ref.result.token_ids, got.result.token_ids
            if a != b:
                first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                mismatches.append(Mismatch(got.example_id, arm.name, first, ref.result.text, got.result.text))
    return mismatches


def run_benchmark(
    loaded: LoadedModel,
    dataset: Dataset,
    configs: list[GenerationConfig],
    warmup: int = 1,
    check: bool = False,
    on_progress: ProgressCallback | None = None,
    batch_size: int = 1,
) -> BenchReport:
    """Run all configs interleaved on the dataset, `batch_size` prompts at a time; summarise speed,
    acceptance and quality."""
    if check and any(not c.greedy for c in configs):
        raise LayerSkipError("the equality check needs greedy decoding (drop --sample)")
    arms = make_arms(loaded, configs)
    samples = run_arms(loaded, dataset, arms, warmup, on_progress, batch_size)
    mismatches = check_equal(arms, samples) if check else None
    flat = [s for ss in samples.values() for s in ss]
    return BenchReport(dataset.name, dataset.metric, summarize(dataset, arms, samples), flat, mismatches)

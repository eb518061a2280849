"""Run lm-eval tasks on the `layerskip` model and save the results as lm-eval does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerskip.errors import LayerSkipError

TASKS_DIR = Path(__file__).with_name("tasks")  # layerskip_mc, layerskip_gen: always available


@dataclass
class HarnessConfig:
    """lm-eval's own options, under lm-eval's names."""

    tasks: list[str]
    include_path: str | None = None
    limit: float | None = None  # below 1: a fraction of each task; else a number of documents
    num_fewshot: int | None = None
    batch_size: int = 1
    output_path: str | None = None
    log_samples: bool = False

    def __post_init__(self) -> None:
        if not self.tasks:
            raise LayerSkipError("no tasks given")
        if self.limit is not None and self.limit <= 0:
            raise LayerSkipError(f"limit must be > 0, got {self.limit}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise LayerSkipError(f"num_fewshot must be >= 0, got {self.num_fewshot}")
        if self.batch_size < 1:
            raise LayerSkipError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.include_path is not None and not Path(self.include_path).is_dir():
            raise LayerSkipError(f"include_path is not a directory: {self.include_path}")
        if self.log_samples and self.output_path is None:
            raise LayerSkipError("log_samples needs an output_path to write the samples to")


def task_manager(cfg: HarnessConfig) -> Any:
    """A TaskManager over our tasks and include_path; lm-eval's own thousands of tasks are
    indexed (about 15 s) only when a requested task is not found there."""
    from lm_eval.tasks import TaskManager

    paths = [str(TASKS_DIR)] + ([cfg.include_path] if cfg.include_path else [])
    local = TaskManager(include_path=paths, include_defaults=False)
    if all(t in local.all_tasks for t in cfg.tasks):
        return local
    manager = TaskManager(include_path=paths)
    missing = [t for t in cfg.tasks if t not in manager.all_tasks]
    if missing:
        raise LayerSkipError(
            f"unknown task(s): {', '.join(missing)}; local tasks: {', '.join(local.all_tasks)}; see `lm-eval ls tasks`"
        )
    return manager


def evaluate(model_args: dict[str, Any], cfg: HarnessConfig) -> dict[str, Any]:
    """lm-eval's simple_evaluate on `layerskip` with model_args; results are saved under
    cfg.output_path (lm-eval's layout) when given. Our figures are in results["config"]["layerskip"]."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    import layerskip.eval.lm  # noqa: F401  registers the model

    tracker = EvaluationTracker(output_path=cfg.output_path)
    try:
        results = simple_evaluate(
            model="layerskip",
            model_args=model_args,
            tasks=cfg.tasks,
            num_fewshot=cfg.num_fewshot,
            batch_size=cfg.batch_size,
            limit=cfg.limit,
            log_samples=cfg.log_samples,
            task_manager=task_manager(cfg),
            evaluation_tracker=tracker,
        )
    except ConnectionError as e:  # raised by datasets for a task whose data is neither cached nor reachable
        raise LayerSkipError(f"{e}: the task's dataset is not in the local HF cache (offline?)") from e
    samples = results.pop("samples", None)
    if cfg.output_path:
        tracker.save_results_aggregated(results=results, samples=samples)
        for task in results["configs"] if samples else []:
            tracker.save_results_samples(task_name=task, samples=samples[task])
    return results

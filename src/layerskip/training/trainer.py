"""The LayerSkip trainer: full fine-tuning or LoRA, one process or many under torchrun + FSDP.

AdamW with warm-up + cosine decay, gradient accumulation and clipping, optional bf16 autocast.
Every `eval_every` steps each evaluated exit's loss and top-1 agreement with the last layer go
to `metrics.jsonl`; checkpoints resume exactly.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer
from layerskip.model.loading import load_model, load_tokenizer, resolve
from layerskip.training import distributed, export, lora
from layerskip.training.checkpoint import Checkpointer, full_state
from layerskip.training.config import ModelSection, OptimSection, TrainConfig
from layerskip.training.data import ByteTokenizer, batch_indices, load_data
from layerskip.training.early_exit import IGNORE_INDEX, enabled_exits, exit_weights
from layerskip.training.layer_dropout import drop_rates
from layerskip.training.objective import LayerSkipObjective, StepPlan

DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded default is, for peft


@dataclass
class TrainResult:
    output: Path  # the exported model directory or adapter
    steps: int
    main_process: bool  # False on the other ranks of a torchrun job
    last_eval: dict[int, dict[str, float]] = field(default_factory=dict)


def build_model(cfg: ModelSection) -> tuple[Transformer, Any, str]:
    """(model in float32 or bf16, tokenizer, base name) — loaded, or freshly initialised."""
    if cfg.init is None:
        loaded = load_model(cfg.name, dtype=cfg.dtype)
        tokenizer = loaded.tokenizer if cfg.tokenizer is None else _tokenizer(cfg.tokenizer)
        return loaded.model, tokenizer, cfg.name or DEFAULT_HUB_ID
    model = Transformer(ModelConfig(**cfg.init)).to(getattr(torch, cfg.dtype))
    return model, _tokenizer(cfg.tokenizer or "default"), "scratch"


def _tokenizer(name: str) -> Any:
    return ByteTokenizer() if name == "bytes" else load_tokenizer(resolve(None if name == "default" else name))


def lr_lambda(cfg: OptimSection) -> Any:
    """Linear warm-up, then cosine decay to lr * min_lr_ratio at max_steps."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine

    return factor


def step_plan(cfg: TrainConfig, n_layers: int, step: int) -> StepPlan:
    total = cfg.optim.max_steps
    exits = enabled_exits(cfg.early_exit, n_layers, step, total)
    weights = exit_weights(cfg.early_exit, exits, n_layers)
    return StepPlan(exits, weights, drop_rates(cfg.layer_dropout, n_layers, step, total))


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.env = distributed.init()
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        torch.manual_seed(cfg.run.seed)  # identical initial weights on every process
        model, self.tokenizer, self.base_name = build_model(cfg.model)
        if cfg.lora.enabled:
            lora.add_lora(model, cfg.lora)
        else:
            model.requires_grad_(True)
        self.model = model.to(self.env.device).train()
        self.objective = LayerSkipObjective(self.model, cfg.early_exit)
        if self.env.sharded:
            distributed.shard(self.objective, self.model.layers)
        torch.manual_seed(cfg.run.seed + self.env.rank)  # layer dropout differs per process
        params = [p for p in self.objective.parameters() if p.requires_grad]
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(o))
        self.out = Path(cfg.run.output_dir)
        self.ckpt = Checkpointer(self.out / "checkpoints", self.env, cfg.run.keep_checkpoints)
        self.train_data, self.eval_data = load_data(cfg.data, self.tokenizer)
        self.step = 0

    @property
    def n_layers(self) -> int:
        return self.model.config.n_layers

    def log(self, record: dict[str, Any]) -> None:
        if self.env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def autocast(self) -> Any:
        enabled = self.cfg.run.precision == "bf16"
        return torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self) -> dict[str, Any]:
        """One optimiser step over grad_accum micro-batches; returns its logged metrics."""
        o, plan = self.cfg.optim, step_plan(self.cfg, self.n_layers, self.step)
        data, device = self.train_data, self.env.device
        sums = torch.zeros(1 + len(plan.exits), device=device)  # loss, then each exit's; no host sync per micro-batch
        for micro in range(o.grad_accum):
            idx = batch_indices(
                len(data), self.cfg.run.seed, self.step, micro, self.env.rank, self.env.world,
                (o.batch_size, o.grad_accum),
            )
            if self.env.sharded:  # reduce-scatter gradients only on the last micro-batch
                self.objective.set_requires_gradient_sync(micro == o.grad_accum - 1)
            with self.autocast():
                out = self.objective(data.inputs[idx].to(device), data.labels[idx].to(device), plan)
            (out.loss / o.grad_accum).backward()
            losses = [out.loss, *(out.exit_loss[e] for e in plan.exits)]
            sums += torch.stack(losses).detach().float() / o.grad_accum
        grad_norm = self._clip()
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        loss, *exit_loss = distributed.mean(sums, self.env).tolist()  # one collective, one host sync
        return {
            "step": self.step,
            "loss": loss,
            "exit_loss": {str(e): v for e, v in zip(plan.exits, exit_loss)},
            "lr": lr,
            "grad_norm": grad_norm,
        }

    def _clip(self) -> float:
        params = [p for p in self.objective.parameters() if p.grad is not None]
        if self.cfg.optim.clip_grad <= 0 or not params:
            return 0.0
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.clip_grad)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def evaluate(self) -> dict[int, dict[str, float]]:
        """Held-out loss and top-1 agreement with the last layer at every evaluated exit."""
        if self.eval_data is None:
            return {}
        exits = sorted(set(self.cfg.run.eval_layers or range(1, self.n_layers)) | {self.n_layers})
        plan = StepPlan(exits, [0.0] * len(exits), [0.0] * self.n_layers)
        data, bs, device = self.eval_data, self.cfg.optim.batch_size, self.env.device
        sums = torch.zeros(len(exits), 2, device=device)  # per exit: token-weighted loss, agreement
        self.objective.eval()
        with torch.no_grad(), self.autocast():
            for i in range(0, len(data), bs):
                labels = data.labels[i : i + bs].to(device)
                out = self.objective(data.inputs[i : i + bs].to(device), labels, plan)
                per_exit = [torch.stack([out.exit_loss[e], out.agreement[e]]) for e in exits]
                sums += torch.stack(per_exit).float() * (labels != IGNORE_INDEX).sum()
        self.objective.train()
        n_all = max(1, data.n_tokens)
        return {e: {"loss": s[0] / n_all, "agreement": s[1] / n_all} for e, s in zip(exits, sums.tolist())}

    def run(self) -> TrainResult:
        run = self.cfg.run
        latest = self.ckpt.latest() if run.resume else None
        if latest is not None:
            self.step = self.ckpt.load(latest, self.objective, self.optimizer, self.scheduler)
            self.log({"event": "resume", "step": self.step, "checkpoint": str(latest)})
        else:
            self.log({"event": "start", "config": self.cfg.to_dict(), "world": self.env.world})
        last_eval: dict[int, dict[str, float]] = {}
        if self.step == 0 and run.eval_at_start:
            last_eval = self._eval_and_log()
        bar = self._progress()
        started = time.monotonic()
        while self.step < self.cfg.optim.max_steps:
            record = self.train_step()
            record["elapsed_s"] = round(time.monotonic() - started, 2)
            if self.step % run.log_every == 0 or self.step == self.cfg.optim.max_steps:
                self.log(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}")
            if run.eval_every and self.step % run.eval_every == 0 and self.step < self.cfg.optim.max_steps:
                last_eval = self._eval_and_log()
            if run.save_every and self.step % run.save_every == 0 and self.step < self.cfg.optim.max_steps:
                self.ckpt.save(self.step, self.objective, self.optimizer, self.scheduler)
        if bar is not None:
            bar.close()
        last_eval = self._eval_and_log() if self.eval_data is not None else last_eval
        self.ckpt.save(self.step, self.objective, self.optimizer, self.scheduler)
        output = self.export(last_eval)
        distributed.barrier(self.env)
        return TrainResult(output, self.step, self.env.is_main, last_eval)

    def _eval_and_log(self) -> dict[int, dict[str, float]]:
        result = self.evaluate()
        self.log({"step": self.step, "eval": {str(e): v for e, v in result.items()}})
        return result

    def _progress(self) -> Any:
        if not (self.cfg.run.progress and self.env.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=self.cfg.optim.max_steps, initial=self.step, desc="train", unit="step")

    def export(self, last_eval: dict[int, dict[str, float]]) -> Path:
        """Write the final model (HF directory) or adapter (peft) under output_dir/final."""
        cfg, model_cfg = self.cfg, self.model.config
        agreement = {e: v["agreement"] for e, v in last_eval.items()}
        model_cfg.recommended_exit_layer = cfg.run.recommended_exit_layer or export.recommend_exit(
            agreement, model_cfg
        )
        state = full_state(self.objective, self.env)
        path = self.out / "final"
        if self.env.is_main:
            state = {k.removeprefix("model."): v for k, v in state.items()}
            if cfg.lora.enabled:
                export.save_adapter(state, model_cfg, path, self.base_name, cfg)
            else:
                export.save_model(state, model_cfg, path, self.tokenizer, cfg.to_dict())
        return path


def train(cfg: TrainConfig) -> TrainResult:
    trainer = Trainer(cfg)
    try:
        return trainer.run()
    finally:
        distributed.close(trainer.env)


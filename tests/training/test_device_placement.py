"""GPU paths checked on the CPU: reductions on the process's device, accumulators on the loss's
device, and every RNG state a process draws on saved and restored. The `meta` device stands in
for a GPU: a CPU tensor mixed into it is an error, as it is for NCCL or a CUDA loss."""

import contextlib
from importlib import resources

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer
from layerskip.training import checkpoint, distributed, trainer
from layerskip.training.config import EarlyExitSection, load_config
from layerskip.training.objective import LayerSkipObjective, StepPlan

TINY = str(resources.files("layerskip.configs") / "train_tiny.yaml")
META = torch.device("meta")


class InPlaceDevices(TorchDispatchMode):
    """Records the device of every tensor updated in place (an accumulator's `+=`) while active."""

    def __init__(self):
        super().__init__()
        self.devices = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name.endswith("_") and isinstance(args[0], torch.Tensor):
            self.devices.add(args[0].device)
        return func(*args, **(kwargs or {}))


def test_mean_reduces_on_the_process_device(monkeypatch):
    seen = []
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda x: seen.append(x.device))
    out = distributed.mean(torch.ones(3), distributed.Env(rank=0, world=2, device=META))
    assert seen == [META] and out.device == META


def test_train_step_accumulates_and_reduces_on_the_process_device(monkeypatch, tmp_path):
    handed = []

    def mean(x, env):
        handed.append(x.device)
        return torch.zeros(x.shape)  # a meta tensor has no values to log

    monkeypatch.setattr(distributed, "init", lambda: distributed.Env(0, 1, META))
    monkeypatch.setattr(distributed, "mean", mean)
    monkeypatch.setattr(trainer.Trainer, "autocast", lambda self: contextlib.nullcontext())  # no meta autocast
    cfg = load_config(TINY, [f"run.output_dir={tmp_path}", "optim.clip_grad=0", "optim.grad_accum=2"])
    record = trainer.Trainer(cfg).train_step()
    assert handed == [META]  # one reduction per step, of loss and every exit's loss together
    assert set(record["exit_loss"]) == {"1", "2", "3", "4", "5", "6"}


def test_evaluation_accumulators_live_on_the_loss_device(monkeypatch):
    from torch.fx.experimental import _config

    monkeypatch.setattr(_config, "meta_nonzero_assume_all_nonzero", True)  # boolean indexing on meta
    cfg = ModelConfig(vocab_size=32, dim=16, n_layers=2, n_heads=2, n_kv_heads=1, intermediate_size=32, max_seq_len=16)
    with torch.device("meta"):
        objective = LayerSkipObjective(Transformer(cfg), EarlyExitSection(chunk_tokens=4)).eval()
        tokens = torch.zeros(2, 8, dtype=torch.long)
    with InPlaceDevices() as updated:
        out = objective(tokens, tokens, StepPlan([1, 2], [0.0, 0.0], [0.0, 0.0]))
    assert updated.devices == {META}  # no CPU accumulator
    assert {t.device for t in [*out.exit_loss.values(), *out.agreement.values()]} == {META}


def test_checkpoint_saves_and_restores_the_gpu_generator(monkeypatch, tmp_path):
    """With the process on a GPU, its CUDA generator (layer dropout's) goes in and comes back."""
    cuda = torch.device("cuda", 0)
    gpu_state = {"now": torch.tensor([1, 2, 3], dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: gpu_state["now"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: gpu_state.update(now=state))
    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ckpt = checkpoint.Checkpointer(tmp_path, distributed.Env(0, 1, cuda), keep=1)
    torch.manual_seed(0)
    ckpt.save(3, module, optimizer, scheduler)
    saved = torch.load(tmp_path / "step_0000003" / checkpoint.STATE_FILE, weights_only=True)["rng"][0]
    assert saved["cuda"].tolist() == [1, 2, 3]
    cpu_draw = torch.rand(4)
    gpu_state["now"] = torch.tensor([9, 9, 9], dtype=torch.uint8)
    assert ckpt.load(ckpt.latest(), module, optimizer, scheduler) == 3
    assert gpu_state["now"].tolist() == [1, 2, 3]
    torch.testing.assert_close(torch.rand(4), cpu_draw)


def test_rng_state_on_the_cpu_has_no_gpu_field_and_old_checkpoints_restore():
    state = checkpoint.rng_state(torch.device("cpu"))
    assert set(state) == {"cpu"}
    draw = torch.rand(3)
    checkpoint.set_rng_state(state["cpu"], torch.device("cpu"))  # a bare CPU state, as before
    torch.testing.assert_close(torch.rand(3), draw)

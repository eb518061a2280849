from importlib import resources

import pytest

from layerskip.errors import LayerSkipError
from layerskip.training.config import TrainConfig, load_config

SHIPPED = sorted(p.name for p in resources.files("layerskip.configs").iterdir() if p.name.startswith("train_"))


def test_the_paper_and_cpu_configs_ship():
    assert {"train_tiny.yaml", "train_smollm2_cpu.yaml"} <= set(SHIPPED)
    assert any("continual" in name for name in SHIPPED) and any("finetune" in name for name in SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads(name):
    cfg = load_config(resources.files("layerskip.configs") / name)
    assert isinstance(cfg, TrainConfig)


def test_unknown_key_is_an_error_with_its_path(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data: {train: [x]}\nlayer_dropout: {p_max: 0.1, scal: exp}\n")
    with pytest.raises(LayerSkipError, match="layer_dropout.scal"):
        load_config(f)


def test_overrides_and_types(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data: {train: [x]}\n")
    cfg = load_config(f, ["optim.lr=1e-4", "early_exit.layers=[2, 4]", "optim.max_steps=7"])
    assert cfg.optim.lr == 1e-4 and cfg.early_exit.layers == [2, 4] and cfg.optim.max_steps == 7
    with pytest.raises(LayerSkipError, match="optim.max_steps"):
        load_config(f, ["optim.max_steps=many"])
    with pytest.raises(LayerSkipError, match="p_max"):
        load_config(f, ["layer_dropout.p_max=1.5"])
    with pytest.raises(LayerSkipError, match="key=value"):
        load_config(f, ["optim.lr"])


def test_teacher_base_needs_lora(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data: {train: [x]}\nearly_exit: {enabled: true, distill_weight: 0.5, teacher: base}\n")
    with pytest.raises(LayerSkipError, match="lora"):
        load_config(f)


@pytest.mark.parametrize(
    ("override", "message"),
    [("run.log_every=0", "run.log_every must be at least 1"), ("run.log_every=-3", "run.log_every"),
     ("run.eval_every=-1", "run.eval_every must be non-negative"),
     ("run.save_every=-1", "run.save_every must be non-negative"), ("run.threads=-1", "run.threads")],
)
def test_intervals_that_would_divide_by_zero_or_never_fire_are_errors(tmp_path, override, message):
    f = tmp_path / "c.yaml"
    f.write_text("data: {train: [x]}\n")
    with pytest.raises(LayerSkipError, match=message):
        load_config(f, [override])
    assert load_config(f, ["run.eval_every=0", "run.save_every=0", "run.log_every=1"]).run.log_every == 1

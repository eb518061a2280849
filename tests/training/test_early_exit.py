import pytest
import torch
import torch.nn.functional as F

from layerskip.training.config import EarlyExitSection
from layerskip.training.early_exit import (
    candidate_exits,
    early_exit_losses,
    enabled_exits,
    exit_weights,
    paper_scale,
)


def test_paper_scale_matches_e_of_l():
    n, e = 6, 0.5
    assert [paper_scale(layer, n, e) for layer in range(n - 1)] == [0, 0.5, 1.5, 3.0, 5.0]
    assert paper_scale(n - 1, n, e) == (n - 1) + e * sum(range(n - 1))


@pytest.mark.parametrize("scale", ["paper", "linear", "uniform"])
def test_weights_sum_to_one_and_grow_with_depth(scale):
    cfg = EarlyExitSection(enabled=True, scale=scale, e_scale=1.0)
    exits = candidate_exits(cfg, 8)
    w = exit_weights(cfg, exits, 8)
    assert sum(w) == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(w, w[1:]))
    if scale == "paper":
        raw = [paper_scale(e - 1, 8, 1.0) for e in exits]
        assert w == pytest.approx([r / sum(raw) for r in raw])


def test_rotational_curriculum_rotates_every_r():
    cfg = EarlyExitSection(enabled=True, curriculum="rotational", rotation=3)
    assert enabled_exits(cfg, 8, step=0, total_steps=10) == [1, 4, 7, 8]
    assert enabled_exits(cfg, 8, step=1, total_steps=10) == [2, 5, 8]
    assert enabled_exits(cfg, 8, step=2, total_steps=10) == [3, 6, 8]
    assert enabled_exits(cfg, 8, step=3, total_steps=10) == [1, 4, 7, 8]


def test_gradual_curriculum_enables_last_to_first_over_half_of_training():
    cfg = EarlyExitSection(enabled=True, curriculum="gradual")
    n, total = 4, 80  # one more exit every total / (2n) = 10 steps
    assert enabled_exits(cfg, n, 0, total) == [4]
    assert enabled_exits(cfg, n, 9, total) == [4]
    assert enabled_exits(cfg, n, 10, total) == [3, 4]
    assert enabled_exits(cfg, n, 25, total) == [2, 3, 4]
    assert enabled_exits(cfg, n, 30, total) == [1, 2, 3, 4]
    assert enabled_exits(cfg, n, 79, total) == [1, 2, 3, 4]


def test_explicit_layers_and_disabled():
    assert enabled_exits(EarlyExitSection(enabled=True, layers=[2, 5]), 8, 0, 10) == [2, 5, 8]
    assert enabled_exits(EarlyExitSection(enabled=False), 8, 0, 10) == [8]
    with pytest.raises(ValueError):
        candidate_exits(EarlyExitSection(enabled=True, layers=[9]), 8)


def _reference(head, hidden, labels):
    return {e: F.cross_entropy(head(h).flatten(0, 1), labels.flatten(), ignore_index=-100) for e, h in hidden.items()}


def test_chunked_loss_equals_plain_cross_entropy_with_gradients():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50)
    hidden = {1: torch.randn(2, 7, 8, requires_grad=True), 3: torch.randn(2, 7, 8, requires_grad=True)}
    labels = torch.randint(0, 50, (2, 7))
    labels[0, :3] = -100
    cfg = EarlyExitSection(enabled=True, chunk_tokens=4)
    got = early_exit_losses(head, hidden, labels, None, cfg, n_layers=3)
    want = _reference(head, hidden, labels)
    for e in hidden:
        assert got[e].item() == pytest.approx(want[e].item(), rel=1e-5)
    g1 = torch.autograd.grad(sum(got.values()), [hidden[1], head.weight])
    g2 = torch.autograd.grad(sum(want.values()), [hidden[1], head.weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_distillation_is_kl_to_the_teacher():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 20)
    h, teacher = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    labels = torch.randint(0, 20, (1, 5))
    cfg = EarlyExitSection(enabled=True, distill_weight=1.0, chunk_tokens=2)
    got = early_exit_losses(head, {1: h, 2: teacher}, labels, teacher, cfg, n_layers=2)
    p_t = F.log_softmax(head(teacher), -1)
    kl = F.kl_div(F.log_softmax(head(h), -1), p_t, log_target=True, reduction="sum") / 5
    assert got[1].item() == pytest.approx(kl.item(), rel=1e-5)
    ce_last = F.cross_entropy(head(teacher)[0], labels[0])
    assert got[2].item() == pytest.approx(ce_last.item(), rel=1e-5)  # no self-distillation at the last layer

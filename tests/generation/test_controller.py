"""The online exit-layer controller: switching E, k and the draft head between rounds is lossless
(greedy tokens equal autoregressive, sampled tokens keep the target distribution), it settles on
the layer from which drafts are perfect, falls back to autoregressive decoding where drafts
disagree, and its decisions are reported. Costs are the memory-bound model in weight units and
measured time is switched off, so every decision here is deterministic."""

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from layerskip import GenerationConfig, LayerSkipError, generate_ids
from layerskip.bench.tuned import TunedSetting, model_key, save_tuned
from layerskip.cli import main
from layerskip.commands.common import tuned_values
from layerskip.generation import batch as batch_module
from layerskip.generation.batch import BatchDecoder, BatchPlan
from layerskip.generation.config import exit_layer_arg
from layerskip.generation.controller import AUTOREGRESSIVE, WARMUP, Choice, ExitController, monotone_fit
from layerskip.generation.costs import memory_bound_costs
from layerskip.model.loaded import LoadedModel
from layerskip.model.packing import ColumnLinear
from layerskip.model.synthetic import random_model, silence_layers

from ..conftest import char_tokenizer, tiny_config
from .test_sampling import E2E_BOUND, E2E_SAMPLES, PROMPT, VOCAB, _tv, exact_model_marginals, sampling_config

AUTO = dict(strategy="self_speculative", ignore_eos=True)


def decode(lm: LoadedModel, prompts: list[list[int]], cfg: GenerationConfig | list[GenerationConfig],
           scripted: list | None = None):
    """Results of `prompts` decoded together by an auto plan (`cfg` one for all or one per row):
    the real controller on memory-bound costs (untimed), or one that runs the `scripted`
    (choice, probes) rounds in turn."""
    cfgs = cfg if isinstance(cfg, list) else [cfg] * len(prompts)
    cfg = cfgs[0]
    plan = BatchPlan.of(cfg, lm.config.n_layers, None)
    costs = memory_bound_costs(lm.config, cfg.num_speculations + 1, draft_vocab_size=32)
    controller = Scripted(costs, cfg.num_speculations, scripted) if scripted else None
    decoder = BatchDecoder(lm, len(prompts), max(map(len, prompts)) + cfg.max_new_tokens + 8, plan, costs, controller)
    decoder.controller.timed = False
    ids = [decoder.join(p, c) for p, c in zip(prompts, cfgs, strict=True)]
    results = decoder.take_finished()
    while decoder.active:
        decoder.step()
        results |= decoder.take_finished()
    return [results[i] for i in ids], decoder.controller


class Scripted(ExitController):
    """Runs the given rounds in a cycle whatever it observes (the shadow counts still flow)."""

    def __init__(self, costs, max_k, script):
        reduced = any(c.reduced for c, _ in script)
        super().__init__(costs, max_k, AUTOREGRESSIVE, (False, True) if reduced else (False,))
        self.script, self.seen = script, []

    def plan(self):
        choice, probes = self.script[self.rounds % len(self.script)]
        self.choice = choice
        return choice, probes

    def observe(self, ran, probes, shadow, accepted, batch, seconds=None):
        self.rounds += 1
        self.seen.append((ran, probes, shadow))


@pytest.fixture
def wide_vocab(monkeypatch):
    """The tiny models' 105-token vocabulary is large enough for a reduced draft head of 32."""
    monkeypatch.setattr(batch_module, "AUTO_DRAFT_VOCAB", 32)


def perfect_from(e0: int, n_layers: int = 8) -> LoadedModel:
    """A random model whose layers >= e0 are silenced: drafts from e0 on are always right."""
    model = random_model(tiny_config(n_layers=n_layers), seed=1, std=0.3)
    return LoadedModel(silence_layers(model, e0).requires_grad_(False), char_tokenizer(), "perfect", None)


SWITCHING = [  # every kind of round, probes in both modes, both draft heads
    (AUTOREGRESSIVE, (1, 3)),
    (Choice(1, 2, True), ()),
    (Choice(3, 4, False), (2,)),  # a probe below E is skipped by the verification, not an error
    (Choice(2, 1, True), (3,)),
    (AUTOREGRESSIVE, ()),
    (Choice(3, 6, True), ()),
]


def test_switching_every_round_equals_autoregressive(tiny, wide_vocab):
    prompts = [tiny.tokenizer(t).input_ids for t in ("def f(x):", "hello world", "a")]
    cfg = GenerationConfig(max_new_tokens=40, num_speculations=6, **AUTO)
    results, controller = decode(tiny, prompts, cfg, SWITCHING)
    ar = [generate_ids(tiny, p, GenerationConfig(max_new_tokens=40, ignore_eos=True)).token_ids for p in prompts]
    assert [r.token_ids for r in results] == ar
    kinds = {(e["exit_layer"], e["num_speculations"], e["draft_vocab_size"]) for e in results[0].exit_layer_schedule}
    assert kinds == {(None, None, None), (1, 2, 32), (3, 4, None), (2, 1, 32), (3, 6, 32)}
    assert sum(e["tokens"] for e in results[0].exit_layer_schedule) == 40
    probed = [s for _, p, s in controller.seen if p]
    # Per probed layer an agreement count, then the positions compared and those the head covers.
    assert all(len(s) == len(p) + 2 for (_, p, _), s in zip([x for x in controller.seen if x[1]], probed,
                                                              strict=True))


def test_shadow_exits_count_what_the_layers_agree_on(wide_vocab):
    """On a model perfect from layer 2 every shadow exit at layer >= 2 agrees wherever the target is
    in the reduced head's vocabulary: agreements equal the covered count."""
    lm = perfect_from(2, n_layers=4)
    script = [(AUTOREGRESSIVE, (2, 3)), (Choice(1, 3, True), (2, 3))]
    _, controller = decode(lm, [[5, 6, 7]], GenerationConfig(max_new_tokens=30, **AUTO), script)
    covered = compared = 0
    for _, probes, shadow in controller.seen:
        *agree, n, c = shadow
        assert n > 0 and agree == [c] * len(probes)
        covered, compared = covered + c, compared + n
    assert compared > covered > 0, "the reduced head (32 of 105 ids) must miss some targets"


def test_each_head_counts_its_own_evidence():
    """A shadow's agreements count for the reduced head over every compared position and for the
    full head over the covered ones; a speculative round's acceptance counts for its own head."""
    c = ExitController(memory_bound_costs(tiny_config(n_layers=8), 7, draft_vocab_size=32), 6, AUTOREGRESSIVE,
                       (False, True))
    c.timed = False
    c.observe(AUTOREGRESSIVE, (3, 5), [2, 4, 10, 5], [], 1)
    assert (c.hits[True][3], c.trials[True][3]) == (2, 10) and (c.hits[False][3], c.trials[False][3]) == (2, 5)
    assert (c.hits[True][5], c.trials[True][5]) == (4, 10) and (c.hits[False][5], c.trials[False][5]) == (4, 5)
    c.observe(Choice(4, 3, False), (), [], [(2, 3)], 1)  # two accepted, then a rejection
    assert (c.hits[False][4], c.trials[False][4]) == (2, 3) and c.trials[True][4] == 0


def test_sampling_keeps_the_target_distribution_while_switching():
    """Tokens 2 and 3 of seeded rows (8 per batch) that switch E, k and autoregressive decoding
    every round keep the exact autoregressive marginals (tests/generation/test_batch.py shows the
    same measurement failing with a wrong acceptance rule)."""
    model = random_model(tiny_config(vocab_size=VOCAB, n_layers=3, dim=32, n_heads=2, n_kv_heads=1,
                                     intermediate_size=64), seed=3, std=0.5)
    lm = LoadedModel(model.requires_grad_(False), char_tokenizer(), "small-vocab", None)
    script = [(Choice(1, 1), ()), (Choice(2, 2), (1,)), (AUTOREGRESSIVE, (1, 2))]
    base = sampling_config("temperature")
    cfg = GenerationConfig(**{**base.__dict__, "exit_layer": None, "num_speculations": 2})

    counts = torch.zeros(2, VOCAB)
    for b in range(E2E_SAMPLES // 8):
        rows = [replace(cfg, seed=8 * b + r) for r in range(8)]
        for result in decode(lm, [PROMPT] * 8, rows, script)[0]:
            counts[0, result.token_ids[1]] += 1
            counts[1, result.token_ids[2]] += 1
    emp2, emp3 = counts / (8 * (E2E_SAMPLES // 8))
    exact2, exact3 = exact_model_marginals(lm.model, cfg)
    assert _tv(emp2, exact2) < E2E_BOUND and _tv(emp3, exact3) < E2E_BOUND


@pytest.mark.parametrize("e0", [3, 5])
def test_controller_settles_on_the_perfect_layer(e0):
    lm = perfect_from(e0)
    cfg = GenerationConfig(max_new_tokens=60, **AUTO)
    (result,), controller = decode(lm, [[5, 6, 7, 8]], cfg)
    assert result.token_ids == generate_ids(lm, [5, 6, 7, 8], GenerationConfig(max_new_tokens=60,
                                                                                ignore_eos=True)).token_ids
    assert result.exit_layer == e0  # k is the cost model's: a late E makes drafts dear
    assert result.exit_layer_schedule[0]["exit_layer"] is None  # it starts autoregressive, probing
    assert result.stats.acceptance_rate == 1.0


def test_a_long_enough_prompt_is_the_warm_up():
    """The prefill shadows every layer at the prompt's last WARMUP positions: with that many the
    first decision comes before the first round (a shorter prompt leaves warm-up rounds)."""
    lm = perfect_from(3)
    cfg = GenerationConfig(max_new_tokens=30, **AUTO)
    (long,), controller = decode(lm, [list(range(5, 5 + WARMUP))], cfg)
    assert long.exit_layer_schedule[0]["exit_layer"] == 3 and long.stats.acceptance_rate == 1.0
    assert all(t >= WARMUP for t in controller.trials[False][1:])
    (short,), _ = decode(lm, [[5, 6, 7]], cfg)
    assert short.exit_layer_schedule[0]["exit_layer"] is None and short.exit_layer == 3


def test_controller_stays_autoregressive_when_drafts_disagree(small_vocab_lm):
    (result,), controller = decode(small_vocab_lm, [PROMPT], GenerationConfig(max_new_tokens=40, **AUTO))
    assert result.exit_layer is None and result.num_speculations is None
    assert [e["exit_layer"] for e in result.exit_layer_schedule] == [None]
    assert controller.rounds == 39 and controller.switches == 0


@pytest.fixture
def small_vocab_lm() -> LoadedModel:
    """Two layers whose exit at 1 rarely agrees with the last (test_sampling's small_vocab)."""
    model = random_model(tiny_config(vocab_size=VOCAB, n_layers=2, dim=32, n_heads=2, n_kv_heads=1,
                                     intermediate_size=64), seed=3, std=0.5)
    return LoadedModel(model.requires_grad_(False), char_tokenizer(), "small-vocab", None)


def test_a_start_setting_is_used_from_the_first_round():
    lm = perfect_from(3)
    cfg = GenerationConfig(max_new_tokens=30, auto_start=(4, 2), **AUTO)
    (result,), _ = decode(lm, [[5, 6, 7]], cfg)
    first = result.exit_layer_schedule[0]
    assert (first["exit_layer"], first["num_speculations"]) == (4, 2)


def test_monotone_fit_pools_violators_and_equal_runs():
    fit = monotone_fit([0, 1, 0, 2, 2, 2], [0, 1, 3, 2, 2, 2])
    assert fit[0] is None
    assert fit[1] == fit[2] == (1 / 5, 4)  # 1/1 then 0/3 violate: pooled, shrunk by one miss
    assert fit[3] == fit[4] == fit[5] == (6 / 7, 6)  # a run that agrees everywhere pools its evidence


def test_expected_rates_follow_the_cost_model():
    costs = memory_bound_costs(tiny_config(n_layers=8), 7)
    c = ExitController(costs, 6, AUTOREGRESSIVE, (False,))
    c.hits[False][4], c.trials[False][4] = 40.0, 40.0
    rates = c.expected_rates()
    p = 40 / 41
    tokens = sum(p**i for i in range(7))
    assert rates[Choice(4, 6)] == pytest.approx(tokens / costs.round_s(4, 6))
    assert rates[AUTOREGRESSIVE] == pytest.approx(1 / costs.forward_s(8, 1))
    assert Choice(3, 1) not in rates  # never observed


def test_plan_admits_only_requests_of_its_kind():
    n = 4
    auto = BatchPlan.of(GenerationConfig(strategy="self_speculative"), n, None)
    fixed = BatchPlan.of(GenerationConfig(strategy="self_speculative", exit_layer=2), n, None)
    assert auto.auto and auto.exit_layer is None and not fixed.auto
    assert "chosen online" in auto.admits(GenerationConfig(strategy="self_speculative", exit_layer=2))
    assert "fixed at 2" in fixed.admits(GenerationConfig(strategy="self_speculative", exit_layer="auto"))
    assert auto.admits(GenerationConfig(strategy="self_speculative", exit_layer="auto")) is None
    assert BatchPlan.of(GenerationConfig(strategy="self_speculative"), n, 2).start == (2, 6)  # the recommendation
    with pytest.raises(LayerSkipError, match="auto"):
        GenerationConfig(strategy="early_exit", exit_layer="auto")
    with pytest.raises(LayerSkipError, match="outside"):
        BatchPlan.of(GenerationConfig(strategy="self_speculative", auto_start=(4, 2)), n, None)
    assert exit_layer_arg("auto") == "auto" and exit_layer_arg("7") == 7
    with pytest.raises(LayerSkipError):
        exit_layer_arg("seven")


def test_generate_json_reports_the_schedule(capsys, tiny_dir):
    rc = main(["generate", "--model", str(tiny_dir), "--prompt", "hello", "--max-new-tokens", "12", "--ignore-eos",
               "--strategy", "self_speculative", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and sum(s["tokens"] for s in d["exit_layer_schedule"]) == d["num_new_tokens"] == 12
    assert set(d["exit_layer_schedule"][0]) == {"exit_layer", "num_speculations", "draft_vocab_size", "tokens"}


def test_tuned_setting_is_the_start(tiny_dir):
    from layerskip.cli import build_parser

    save_tuned(TunedSetting(model_key(str(tiny_dir), "float32", "cpu"), 3, 4, 1.4, 0.8, True, "code", 16))
    args = build_parser("generate").parse_args(["generate", "--model", str(tiny_dir), "--prompt", "x", "--strategy",
                                      "self_speculative"])
    assert tuned_values(args) == {"exit_layer": "auto", "num_speculations": 6, "auto_start": (3, 4)}
    args.exit_layer = 2  # a fixed E is honoured, k from the tuned file
    assert tuned_values(args) == {"exit_layer": 2, "num_speculations": 4}


@pytest.mark.parametrize("tied_lm", ["stays_autoregressive", "speculates"])
def test_tied_head_is_laid_out_for_the_mode_the_controller_settles_in(tied_lm, small_vocab_lm):
    """One row per product for autoregressive rounds, k+1 for verifications (packing.py): an auto
    decoder that falls back must not keep the verification's layout (slower for one row)."""
    if tied_lm == "speculates":
        lm, prompt, speculating = perfect_from(3), [5, 6, 7, 8], True
    else:
        lm, prompt, speculating = small_vocab_lm, PROMPT, False
    lm.model.output.weight = lm.model.tok_embeddings.weight
    (result,), controller = decode(lm, [prompt], GenerationConfig(max_new_tokens=40, **AUTO))
    assert controller.choice.speculative is speculating
    assert isinstance(lm.model.output, ColumnLinear) is speculating


def test_warm_up_shadows_every_layer_and_a_total_miss_shadows_every_layer_above_e():
    costs = memory_bound_costs(tiny_config(n_layers=8), 7)
    fresh = ExitController(costs, 6, None, (False,))
    assert fresh.plan() == (AUTOREGRESSIVE, tuple(range(1, 8)))  # every layer has evidence of its own
    c = ExitController(costs, 6, Choice(2, 3), (False,))
    c.timed = False
    c.observe(Choice(2, 3), (), [], [(1, 3)], 1)
    assert c.plan()[1] != tuple(range(3, 8))  # a partly accepted round: no extra probing
    c.observe(Choice(2, 3), (), [], [(0, 3)], 1)
    choice, probes = c.plan()  # E may have moved on the miss
    assert choice.speculative and probes == tuple(range(choice.exit_layer + 1, 8))


def test_one_slow_speculative_round_does_not_rule_speculation_out():
    """The speculative/autoregressive time ratio is shrunk towards 1 by PRIOR_ROUNDS pseudo-rounds."""
    c = ExitController(memory_bound_costs(tiny_config(n_layers=8), 7), 6, None, (False,))
    c.slowdown[False].extend([1.0] * 8)
    c.slowdown[True].append(2.0)  # one round twice as slow as predicted
    assert c._factor(False) == 1.0 and 1.0 < c._factor(True) < 2.0 ** 0.25
    c.slowdown[True].extend([2.0] * 15)  # a systematic overhead shows
    assert c._factor(True) == pytest.approx(2.0 ** (16 / 20))


def costs_one_layer() -> float:
    return memory_bound_costs(tiny_config(n_layers=8), 7).layer_s[0]


def _layout_costs(relayout_s: float):
    """Memory-bound costs where the verification layout makes a layer over 2.. tokens cost a
    quarter (and a one-token pass 1.5x), and moving a layer costs `relayout_s` weight units."""
    costs, one = memory_bound_costs(tiny_config(n_layers=8), 7), costs_one_layer()
    return replace(costs, verify_layer_s=[1.5 * one] + [one / 4] * 6, relayout_s=relayout_s)


def test_layers_are_laid_out_for_verifications_only_when_the_rest_earns_it():
    costs = _layout_costs(relayout_s=costs_one_layer() * 2)
    c = ExitController(costs, 6, None, (False,))
    c.warming, c.choice = False, Choice(3, 6)  # settled on E=3 with the layers laid out for one row
    c.hits[False][3], c.trials[False][3] = 40.0, 40.0
    assert c.layout(tokens_left=2, batch=1) is None  # 5 layers to move, ~0.3 rounds left
    assert c.layout(tokens_left=1, batch=4) is None  # a batch's layouts are the same anyway
    c.after = 200  # the model's previous generation decoded 200 tokens: the layout outlives this one
    assert c.layout(tokens_left=2, batch=1) == 3 and c.laid_from == 3
    c.after, c.laid_from = 0, None
    assert c.layout(tokens_left=200, batch=1) == 3 and c.laid_from == 3
    c.choice = AUTOREGRESSIVE  # fell back: one-token passes through the laid-out layers cost 1.5x
    assert c.layout(tokens_left=3, batch=1) == 3  # not worth moving back for 3 tokens
    assert c.layout(tokens_left=500, batch=1) is None
    started = ExitController(costs, 6, Choice(3, 6), (False,))  # a start setting, no evidence yet:
    assert started.laid_from == 3  # laid out for before decoding, as a fixed setting is
    started.laid_from = None
    assert started.layout(tokens_left=500, batch=1) is None  # and no move judged on no evidence
    assert ExitController(costs, 6, AUTOREGRESSIVE, (False,)).laid_from is None
    free = ExitController(replace(costs, verify_layer_s=None), 6, Choice(3, 6), (False,))
    assert free.layout(tokens_left=500, batch=1) is None  # the same layout: nothing to move


def test_decoder_lays_out_the_layers_the_controller_asks_for(monkeypatch):
    """An auto decoder settling on E moves layers E.. to the verification's rows and back for
    one row, and decoding stays lossless."""
    moves = []
    real = batch_module.lay_out_layers

    def recording(blocks, rows):
        blocks = list(blocks)
        moves.append((len(blocks), rows))
        return real(blocks, rows)

    monkeypatch.setattr(batch_module, "lay_out_layers", recording)
    lm, prompt = perfect_from(3), [5, 6, 7, 8]
    cfg = GenerationConfig(max_new_tokens=60, **AUTO)
    plan = BatchPlan.of(cfg, lm.config.n_layers, None)
    decoder = BatchDecoder(lm, 1, 80, plan, _layout_costs(relayout_s=costs_one_layer() / 10))
    decoder.controller.timed = False
    rid = decoder.join(prompt, cfg)
    while decoder.active:
        decoder.step()
    result = decoder.take_finished()[rid]
    assert result.token_ids == generate_ids(lm, prompt, GenerationConfig(max_new_tokens=60, ignore_eos=True)).token_ids
    e = decoder.controller.laid_from
    assert e == result.exit_layer == 3 and moves[0] == (3, 1) and moves[1] == (5, 7)  # layers 0-2, 3-7


def test_the_next_generation_carries_over_the_layout_not_the_evidence():
    """A model's next auto generation starts with its last controller's layout (layers E.. laid
    out for verifications before its first round: nothing to move); its evidence and round times
    start afresh, so it warms up on its own context again. Tokens stay autoregressive ones;
    `forget` drops the layout too."""
    lm, prompt = perfect_from(3), [5, 6, 7]  # short: a fresh controller's first rounds warm up
    cfg = GenerationConfig(max_new_tokens=40, **AUTO)
    plan = BatchPlan.of(cfg, lm.config.n_layers, None)
    costs = _layout_costs(relayout_s=costs_one_layer() / 10)
    moves, evidence = [], []

    def generation():
        decoder = BatchDecoder(lm, 1, 60, plan, costs)
        decoder.controller.timed = False
        evidence.append(sum(decoder.controller.trials[False]))
        laid_out = [type(layer.feed_forward.w13).__name__ for layer in lm.model.layers]
        rid = decoder.join(prompt, cfg)
        before = decoder.controller.laid_from
        while decoder.active:
            decoder.step()
        moves.append(before != decoder.controller.laid_from)
        return decoder.take_finished()[rid], decoder.controller, laid_out

    ar = generate_ids(lm, prompt, GenerationConfig(max_new_tokens=40, ignore_eos=True)).token_ids
    first, learned, _ = generation()
    learned.slowdown[True].append(1.5)
    second, carried, laid_out = generation()
    assert laid_out == ["Linear"] * 3 + ["PackedLinear"] * 5 and moves == [True, False]
    assert 1.5 not in carried.slowdown[True] and evidence == [0, 0]
    assert carried.after == learned.decoded == len(first.token_ids) - 1  # the first came from the prefill
    # the same warm-up and E (k may differ: the layers are already laid out when it decides)
    assert [s["exit_layer"] for s in second.exit_layer_schedule] == [s["exit_layer"] for s in first.exit_layer_schedule]
    assert first.token_ids == second.token_ids == ar
    batch_module.forget(lm.model)
    _, _, laid_out = generation()
    assert laid_out == ["Linear"] * 8


def test_a_decoder_lays_the_head_out_once_for_how_it_starts(monkeypatch):
    """Set-up lays a tied float32 head out for the controller's first rounds (autoregressive
    without a start setting, verifications with a speculative one): moving it there afterwards
    would copy the vocabulary matrix twice per generation."""
    model = random_model(tiny_config(n_layers=8, tie_word_embeddings=True), seed=1, std=0.3)
    lm = LoadedModel(silence_layers(model, 3).requires_grad_(False), char_tokenizer(), "tied", None)
    moves = []
    real = batch_module.lay_out_tied_head
    monkeypatch.setattr(batch_module, "lay_out_tied_head", lambda *a: moves.append(a[-1]) or real(*a))
    for start, kind in [(None, nn.Linear), ((3, 6), ColumnLinear)]:
        cfg = GenerationConfig(max_new_tokens=8, auto_start=start, **AUTO)
        BatchDecoder(lm, 1, 32, BatchPlan.of(cfg, lm.config.n_layers, None), _layout_costs(relayout_s=0.0))
        assert type(lm.model.output) is kind and moves == []


def test_a_start_setting_is_laid_out_before_decoding(monkeypatch):
    """A tuned start E lays layers E.. out for verifications where the caches are set up, as a
    fixed E does, so a one-shot generation that stays there moves nothing while it decodes."""
    lm, prompt = perfect_from(3), [5, 6, 7, 8]
    cfg = GenerationConfig(max_new_tokens=40, auto_start=(3, 6), **AUTO)
    decoder = BatchDecoder(lm, 1, 60, BatchPlan.of(cfg, lm.config.n_layers, None),
                           _layout_costs(relayout_s=costs_one_layer() / 10))
    decoder.controller.timed = False
    laid_out = [type(layer.feed_forward.w13).__name__ for layer in lm.model.layers]
    moves = []
    monkeypatch.setattr(batch_module, "lay_out_layers", lambda blocks, rows: moves.append(rows))
    rid = decoder.join(prompt, cfg)
    while decoder.active:
        decoder.step()
    result = decoder.take_finished()[rid]
    assert laid_out == ["Linear"] * 3 + ["PackedLinear"] * 5 and moves == [] and result.exit_layer == 3
    assert result.token_ids == generate_ids(lm, prompt, GenerationConfig(max_new_tokens=40, ignore_eos=True)).token_ids


@pytest.mark.parametrize("better, switches", [(Choice(3, 6), True), (Choice(4, 5), False), (Choice(3, 5, True), False)])
def test_only_a_change_of_k_alone_takes_a_small_gain(better, switches, monkeypatch):
    """A 2 % gain: enough to lengthen the draft (nothing moves), not to change the layer or head."""
    c = ExitController(memory_bound_costs(tiny_config(n_layers=8), 7), 6, Choice(3, 5), (False, True))
    monkeypatch.setattr(c, "expected_rates", lambda batch: {AUTOREGRESSIVE: 0.5, Choice(3, 5): 1.0, better: 1.02})
    c._decide(1)
    assert (c.choice == better) == switches and c.switches == int(switches)

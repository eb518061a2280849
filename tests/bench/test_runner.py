import pytest

from layerskip.bench.data import Dataset, Example, load_dataset
from layerskip.bench.runner import check_equal, make_arms, run_benchmark
from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig
from layerskip.generation.generate import generate

SUMMARY_KEYS = {"arm", "strategy", "exit_layer", "num_speculations", "num_generations", "new_tokens",
                "decode_tokens_per_s", "ms_per_token", "total_tokens_per_s", "speedup", "acceptance_rate",
                "mean_accepted_length", "aggregate_tokens_per_s"}


def configs(**kw):
    return [GenerationConfig(strategy=s, max_new_tokens=10, exit_layer=2, num_speculations=3, **kw)
            for s in ("autoregressive", "self_speculative", "early_exit")]


def test_run_benchmark_tiny(tiny):
    ds = load_dataset("qa", num_samples=3)
    report = run_benchmark(tiny, ds, configs(), check=True)
    names = [a.name for a in report.arms]
    assert names == ["autoregressive", "self_speculative E=2 k=3", "early_exit E=2"]
    ar, spec, ee = report.arms
    assert ar.speedup == pytest.approx(1.0) and spec.speedup > 0 and ee.speedup > 0
    assert report.mismatches == []  # greedy self-speculation is lossless
    assert spec.speed.stats.num_verifications > 0 and 0 <= spec.speed.stats.acceptance_rate <= 1
    assert ar.speed.stats.num_drafted == 0 and ar.row()["acceptance_rate"] is None
    assert len(report.samples) == 9 and {s.example_id for s in report.samples} == {"qa-00", "qa-01", "qa-02"}
    d = report.to_dict()
    assert d["check"] == {"equal": True, "mismatches": []}
    for row in d["summary"]:
        assert SUMMARY_KEYS | {"exact_match"} == set(row)
    assert {"arm", "example_id", "new_tokens", "decode_tokens_per_s", "prediction"} <= set(d["samples"][0])


def test_batched_benchmark_gives_each_prompt_its_single_output(tiny):
    """--batch-size: prompts run 3 at a time through generate_batch_ids, tokens unchanged."""
    ds = load_dataset("qa", num_samples=5)
    one = run_benchmark(tiny, ds, configs()[:2], warmup=0)
    batched = run_benchmark(tiny, ds, configs()[:2], warmup=0, batch_size=3, check=True)
    assert [s.result.token_ids for s in batched.samples] == [s.result.token_ids for s in one.samples]
    assert [s.batch for s in batched.samples[:5]] == [0, 0, 0, 1, 1] and batched.mismatches == []
    assert all(a.aggregate_tokens_per_s > 0 for a in batched.arms)


def test_check_lists_differing_prompts(tiny):
    ds = load_dataset("qa", num_samples=2)
    report = run_benchmark(tiny, ds, configs()[:2])
    arms = make_arms(tiny, configs()[:2])
    samples = {a.name: [s for s in report.samples if s.arm == a.name] for a in arms}
    victim = samples[arms[1].name][1].result
    victim.token_ids = victim.token_ids[:4] + [(victim.token_ids[4] + 1) % 100] + victim.token_ids[5:]
    (m,) = check_equal(arms, samples)
    assert m.example_id == "qa-01" and m.first_difference == 4 and m.arm == arms[1].name


def test_check_needs_greedy_and_autoregressive(tiny):
    ds = Dataset("one", [Example("0", "hello")])
    with pytest.raises(LayerSkipError, match="greedy"):
        run_benchmark(tiny, ds, configs(do_sample=True, seed=0), check=True)
    with pytest.raises(LayerSkipError, match="autoregressive"):
        run_benchmark(tiny, ds, configs()[1:2], check=True)


def test_duplicate_arms_rejected(tiny):
    with pytest.raises(LayerSkipError, match="duplicate"):
        make_arms(tiny, configs()[:1] * 2)


def test_an_auto_arm_is_named_for_what_it_chooses(tiny):
    auto = GenerationConfig(strategy="self_speculative", exit_layer="auto", num_speculations=4)
    (arm,) = make_arms(tiny, [auto])
    assert arm.name == "self_speculative E=auto k<=4" and arm.config.auto_exit


@pytest.mark.slow
def test_bench_smollm2_agrees_with_a_separate_generation(smollm2):
    """Offline on a built-in set; tokens and acceptance equal those of a separate `generate` call
    (what `generate --json` prints), and greedy self-speculation equals autoregressive."""
    ds = load_dataset("qa", num_samples=1)
    cfgs = [GenerationConfig(strategy=s, exit_layer=8, num_speculations=3, max_new_tokens=10)
            for s in ("autoregressive", "self_speculative")]
    report = run_benchmark(smollm2, ds, cfgs, check=True)
    assert report.mismatches == []
    spec = report.summary("self_speculative E=8 k=3").row()
    alone = generate(smollm2, ds.examples[0].prompt, cfgs[1]).to_dict()
    assert alone["num_new_tokens"] == spec["new_tokens"]
    assert alone["acceptance_rate"] == pytest.approx(spec["acceptance_rate"])
    assert alone["mean_accepted_length"] == pytest.approx(spec["mean_accepted_length"])

"""The static-shape decode steps: compiled whole, they trace a small constant number of graphs
over a long generation (not one per token), and give the eager tokens."""

from dataclasses import replace

import pytest
import torch
from torch._dynamo.utils import counters

from layerskip import GenerationConfig, generate_ids
from layerskip.generation.steps import EAGER, decode_step, prefill, prepare_for_decoding, probed_prefill, steps_for
from layerskip.model.llama import positions
from layerskip.model.loaded import LoadedModel


def _graphs(loaded: LoadedModel, cfg: GenerationConfig, prompt: list[int]) -> tuple[int, list[int]]:
    """Graphs dynamo traced for one generation with a fresh set of compiled steps, and its tokens."""
    torch._dynamo.reset()
    counters.clear()
    out = generate_ids(loaded, prompt, cfg).token_ids
    return counters["stats"]["unique_graphs"], out


@pytest.mark.parametrize(
    "cfg, most",
    [
        # one decode step (+1 where dynamo specialises the first call's inputs)
        (GenerationConfig(max_new_tokens=128, ignore_eos=True), 2),
        # draft + early + verify of k+1 rows, and k shorter verifications in the last rounds
        (GenerationConfig(strategy="self_speculative", exit_layer=2, num_speculations=3, max_new_tokens=128,
                          ignore_eos=True), 3 + 3 + 1),
    ],
)
def test_a_long_generation_compiles_a_constant_number_of_graphs(tiny, cfg, most):
    traced = LoadedModel(tiny.model, tiny.tokenizer, tiny.name, tiny.path, compile="eager")
    prompt = tiny.tokenizer("def f(x):").input_ids
    graphs, tokens = _graphs(traced, cfg, prompt)
    assert 1 <= graphs <= most
    short, _ = _graphs(traced, replace(cfg, max_new_tokens=16), prompt)
    assert graphs == short, "graphs must not grow with the number of tokens"
    assert tokens == generate_ids(tiny, prompt, cfg).token_ids
    assert len(tokens) == 128


def test_steps_are_eager_unless_asked(tiny):
    assert steps_for(tiny.model, False) is EAGER
    compiled = steps_for(tiny.model, "eager")
    assert compiled is not EAGER and steps_for(tiny.model, "eager") is compiled  # compiled once per model


def test_probed_prefill_is_a_prefill_that_keeps_the_probed_states(tiny):
    """Same last logits and the same caches as `prefill` (the next step agrees), plus the full
    model's logits at the last positions and the states after each probed layer there."""
    model, n = tiny.model, 6
    prompt = torch.tensor([tiny.tokenizer("def f(x):").input_ids[:n]])
    with torch.inference_mode():
        prepare_for_decoding(model, 32)
        plain = prefill(model, prompt, positions(0, n))
        after_plain = decode_step(model, plain.argmax(-1)[:, None], positions(n, 1), None, None)
        logits, states = probed_prefill(model, prompt, positions(0, n), (1, 3), 4)
        after_probed = decode_step(model, logits[:, -1].argmax(-1)[:, None], positions(n, 1), None, None)
        full = model.exit_logits(model.run_layers(model.embed(prompt), None))
        at_3 = model.run_layers(model.embed(prompt), None, 0, 3)
    torch.testing.assert_close(logits[:, -1], plain)
    torch.testing.assert_close(after_probed, after_plain)
    torch.testing.assert_close(logits, full[:, -4:])
    assert states.shape == (2, 1, 4, model.config.dim)
    torch.testing.assert_close(states[1], at_3[:, -4:])

"""--compile: the inductor-compiled decode steps give the eager tokens in every strategy, on the
packed decoding layout."""

import pytest
import torch

from layerskip import GenerationConfig, generate_ids
from layerskip.generation.steps import EAGER, steps_for
from layerskip.model import packing
from layerskip.model.loading import load_model
from layerskip.model.packing import PackedLinear


@pytest.fixture(scope="module")
def compiled(tiny_dir):
    """One compiled copy for the three strategies, so that the steps they share compile once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(packing, "_packable", lambda w: w.dtype == torch.float32)  # the opaque packed op, compiled
        yield load_model(str(tiny_dir), compile=True)


@pytest.mark.parametrize("strategy", ["autoregressive", "early_exit", "self_speculative"])
def test_compiled_steps_generate_the_eager_tokens(compiled, tiny, strategy):
    prompt = tiny.tokenizer("def f(x):").input_ids
    cfg = GenerationConfig(strategy=strategy, exit_layer=2, num_speculations=3, max_new_tokens=24, ignore_eos=True)
    assert generate_ids(compiled, prompt, cfg).token_ids == generate_ids(tiny, prompt, cfg).token_ids
    assert steps_for(compiled.model, compiled.compile) is not EAGER
    assert isinstance(compiled.model.layers[0].feed_forward.w13, PackedLinear)

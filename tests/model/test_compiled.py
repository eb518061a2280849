"""--compile: torch.compile'd blocks give the eager tokens, and self-speculation stays lossless."""

from layerskip import GenerationConfig, generate_ids
from layerskip.commands.common import add_model_arguments
from layerskip.model.loading import load_model
from layerskip.model.packing import PackedLinear


def test_compiled_blocks_generate_the_eager_tokens(tiny_dir, tiny):
    compiled = load_model(str(tiny_dir), compile=True)
    prompt = tiny.tokenizer("def f(x):").input_ids
    ar = GenerationConfig(strategy="autoregressive", max_new_tokens=24, ignore_eos=True)
    ss = GenerationConfig(strategy="self_speculative", exit_layer=2, num_speculations=3, max_new_tokens=24,
                          ignore_eos=True)
    eager = generate_ids(tiny, prompt, ar).token_ids
    assert generate_ids(compiled, prompt, ar).token_ids == eager
    assert generate_ids(compiled, prompt, ss).token_ids == eager  # prefill, decode, draft, verify shapes
    assert all(layer._compiled_call_impl is not None for layer in compiled.model.layers)
    assert isinstance(compiled.model.layers[0].feed_forward.w13, PackedLinear)


def test_compile_and_adapter_flags_parse():
    import argparse

    p = argparse.ArgumentParser()
    add_model_arguments(p)
    args = p.parse_args(["--compile", "--adapter", "runs/x/final"])
    assert args.compile and args.adapter == "runs/x/final"
    assert not p.parse_args([]).compile

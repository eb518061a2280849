"""layerskip: early-exit inference, self-speculative decoding and the LayerSkip training recipe
for Llama-family models.

    from layerskip import load_model, generate, GenerationConfig
    lm = load_model()  # the embedded SmolLM2-135M-Instruct
    out = generate(lm, "def fib(n):", GenerationConfig(strategy="self_speculative", exit_layer=8))
    print(out.text, out.stats.acceptance_rate)
"""

from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig
from layerskip.generation.generate import generate, generate_batch, generate_batch_ids, generate_ids
from layerskip.generation.output import GenerationResult, SpeculationStats
from layerskip.model.loaded import LoadedModel
from layerskip.model.loading import load_model

__all__ = [
    "GenerationConfig",
    "GenerationResult",
    "LayerSkipError",
    "LoadedModel",
    "SpeculationStats",
    "generate",
    "generate_batch",
    "generate_batch_ids",
    "generate_ids",
    "load_model",
]
__version__ = "0.1.0"

"""Shared fixtures: a tiny character-level tokenizer and tiny random Llama models on disk, and the
embedded SmolLM2 loaded once per session."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
import torch

from layerskip.cache_paths import cache_root, file_key
from layerskip.generation.batch import forget
from layerskip.model.config import ModelConfig, RopeScaling
from layerskip.model.loaded import LoadedModel
from layerskip.model.loading import load_model
from layerskip.model.saving import save_pretrained
from layerskip.model.synthetic import random_model, silence_layers

HF_REFERENCE = "hf-reference"  # the cache's directory for smollm2_hf


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """$LAYERSKIP_CACHE is a fresh directory per session, so no setting the developer tuned changes
    a default. The dequantised weights, the GGUF configs, the tokenizers and HF's reading of SmolLM2
    are linked in from the usual cache: they are keyed by file and change nothing but load time
    (SmolLM2 stays warm across sessions)."""
    usual, own = cache_root(), tmp_path_factory.mktemp("layerskip-cache")
    for name in ("weights", "configs", "tokenizers", HF_REFERENCE):  # model/weight_cache.py, loading.py, smollm2_hf
        try:
            (usual / name).mkdir(parents=True, exist_ok=True)
            (own / name).symlink_to(usual / name, target_is_directory=True)
        except OSError:  # a read-only home: this session warms its own
            pass
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAYERSKIP_CACHE", str(own))
        yield own


@pytest.fixture(autouse=True)
def _fresh_controllers():
    """Every test's auto decoding starts afresh: shared models must not carry one test's evidence
    into the next (generation/batch.py carries it from generation to generation)."""
    forget()


@pytest.fixture(autouse=True)
def _threads(request):
    """Two threads for the real model; one for tiny models, where thread hand-offs cost more than
    the arithmetic (measured: 7 ms vs 124 ms per tiny generation on a busy 2-core machine). One
    for everything when pytest-xdist runs a worker per core: two threads each would oversubscribe."""
    parallel = "PYTEST_XDIST_WORKER" in os.environ
    torch.set_num_threads(2 if not parallel and any("smollm2" in name for name in request.fixturenames) else 1)

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def char_tokenizer():
    """A tiny character-level fast tokenizer (vocab ~100) with BOS/EOS and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<user>", "<assistant>"]
    chars = list(string.printable)
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    from tokenizers import decoders

    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=["<user>", "<assistant>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(**overrides) -> ModelConfig:
    base = dict(
        vocab_size=105, dim=64, n_layers=4, n_heads=4, n_kv_heads=2, intermediate_size=128,
        max_seq_len=512, rope_theta=10000.0, bos_token_id=1, eos_token_ids=[2],
    )
    base.update(overrides)
    return ModelConfig(**base)


def tiny_tokenizer_overrides(model_dir: Path) -> list[str]:
    """Training overrides for a from-scratch model with `model_dir`'s character tokenizer: an
    exported model needs a tokenizer on disk (the bytes one has none), and SmolLM2's would make
    every exit head 49152 wide."""
    return [f"model.tokenizer={model_dir}", f"model.init.vocab_size={tiny_config().vocab_size}"]


def make_model_dir(path: Path, seed: int = 0, std: float = 0.02, **overrides) -> Path:
    model = random_model(tiny_config(**overrides), seed=seed, std=std)
    return save_pretrained(model, path, char_tokenizer())


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Untied head, GQA, default rope."""
    return make_model_dir(tmp_path_factory.mktemp("tiny"), std=0.2)


@pytest.fixture(scope="session")
def tiny_tied_llama3_dir(tmp_path_factory) -> Path:
    """Tied head, GQA and llama3 rope scaling."""
    scaling = RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64)
    return make_model_dir(tmp_path_factory.mktemp("tiny3"), seed=1, std=0.2, tie_word_embeddings=True,
                          rope_scaling=scaling, rope_theta=500000.0)


@pytest.fixture(scope="session")
def tiny(tiny_dir) -> LoadedModel:
    return load_model(str(tiny_dir))


PERFECT_FROM = 2  # the first identity layer of `tiny_perfect`


@pytest.fixture(scope="session")
def tiny_perfect(tiny_dir) -> LoadedModel:
    """A private copy of the tiny model (the shared one must not be modified) whose layers from
    PERFECT_FROM on are the identity: a draft exiting at E >= PERFECT_FROM is always accepted."""
    loaded = load_model(str(tiny_dir))
    silence_layers(loaded.model, PERFECT_FROM)
    return loaded


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    """The embedded default model (float32), loaded once for the whole test session."""
    return load_model()


def _save_hf_reading(gguf: Path, saved: Path) -> None:
    """HF's own reading of `gguf` (its GGUF parser, ~25 s on one core), saved as config.json and
    safetensors. HF refuses to save a model it read from GGUF, so the state dict is written directly."""
    import functools
    import json
    import shutil

    import gguf as gguf_py
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM

    with pytest.MonkeyPatch.context() as mp:
        # HF's reading parses the file twice (config, weights) and rebuilds gguf-py's tensor-name
        # map once per module: ~25 s of its ~45 here. Both are pure, so they are memoised for it;
        # what HF reads is unchanged.
        mp.setattr(gguf_py, "GGUFReader", functools.cache(gguf_py.GGUFReader))
        mp.setattr(gguf_py, "get_tensor_name_map", functools.cache(gguf_py.get_tensor_name_map))
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights are dequantised float32
    tmp = saved.with_name(f"{saved.name}.{os.getpid()}.tmp")
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(config))
    save_model(model, str(tmp / "model.safetensors"))  # the tied head is stored once
    try:
        tmp.rename(saved)  # whole or not at all
    except OSError:  # another session saved it first
        shutil.rmtree(tmp)


@pytest.fixture(scope="session")
def smollm2_hf(smollm2):
    """HF transformers' LlamaForCausalLM as HF reads the same GGUF file: the parity reference.
    HF's reading is kept in the cache, keyed by the file and the transformers version, and every
    session (the first too) loads it from there in about a second."""
    import transformers
    from transformers import AutoModelForCausalLM

    saved = cache_root() / HF_REFERENCE / f"{file_key(smollm2.path)}-{transformers.__version__}"
    if not (saved / "model.safetensors").is_file():
        _save_hf_reading(smollm2.path, saved)
    return AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32).eval()

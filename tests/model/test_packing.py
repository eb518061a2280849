"""The float32 head tied to the embedding: laid out by how many rows its products multiply
(one row: [in, out] in memory; more: contiguous, computed as a column product), still one matrix
shared with the embedding, same logits."""

import torch
from torch import nn

from layerskip.generation.steps import prepare_for_decoding
from layerskip.model.packing import ColumnLinear, pack_for_decoding
from layerskip.model.synthetic import random_model

from ..conftest import tiny_config


def test_tied_head_follows_its_rows_and_stays_one_matrix():
    model = random_model(tiny_config(tie_word_embeddings=True), std=0.2)
    w = model.tok_embeddings.weight
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.arange(3, 30)[None]
    with torch.no_grad():
        ref = model(ids)
        pack_for_decoding(model, tied=w, rows=1, head_rows=4)  # a verification of 4 rows
        assert type(model.output) is ColumnLinear and model.output.weight is w and w.is_contiguous()
        torch.testing.assert_close(model(ids), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(ids[:, :1]), ref[:, :1], atol=1e-5, rtol=1e-5)
        pack_for_decoding(model, tied=w, rows=1)  # autoregressive: one row
        assert type(model.output) is nn.Linear and model.output.weight is w and w.stride() == (1, w.shape[0])
        torch.testing.assert_close(model(ids), ref, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_speculative_decoding_lays_the_tied_head_out_for_its_verification():
    model = random_model(tiny_config(tie_word_embeddings=True))
    prepare_for_decoding(model, 32, exit_query_len=4)
    assert type(model.output) is ColumnLinear and model.output.weight is model.tok_embeddings.weight
    prepare_for_decoding(model, 32)
    assert type(model.output) is nn.Linear


def test_bfloat16_tied_head_is_left_plain():
    model = random_model(tiny_config(tie_word_embeddings=True)).to(torch.bfloat16)
    pack_for_decoding(model, tied=model.tok_embeddings.weight, head_rows=4)
    assert type(model.output) is nn.Linear and model.output.weight.is_contiguous()

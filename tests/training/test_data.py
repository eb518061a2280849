import json

import torch

from layerskip.training.config import DataSection
from layerskip.training.data import ByteTokenizer, batch_indices, instruction_rows, load_data, pack


def test_pack_shifts_labels_by_one():
    d = pack(list(range(10)), 3)
    assert d.inputs.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert d.labels.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_instruction_rows_mask_the_prompt():
    d = instruction_rows([([10, 11], [12, 13, 99])], 6)
    assert d.inputs[0].tolist() == [10, 11, 12, 13, 0, 0]
    assert d.labels[0].tolist() == [-100, 12, 13, 99, -100, -100]


def test_jsonl_mixes_packed_text_and_instructions(tmp_path):
    f = tmp_path / "d.jsonl"
    rows = [{"text": "abcdefghij"}, {"prompt": "Q:", "response": "yes"}]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = DataSection(train=[str(f)], eval=[str(f)], format="jsonl", seq_len=4, max_eval_tokens=8)
    train, held = load_data(cfg, ByteTokenizer())
    assert len(train) == 2 + 1  # 11 text tokens -> 2 packed rows, plus one instruction row
    assert train.labels[-1].tolist() == [-100, ord("y"), ord("e"), ord("s")]
    assert held is not None and len(held) == 2  # max_eval_tokens // seq_len rows


def test_batch_order_is_stateless_and_covers_each_epoch():
    n = 10
    seen = torch.cat([batch_indices(n, 0, s, 0, 0, 1, (2, 1)) for s in range(5)])
    assert sorted(seen.tolist()) == list(range(n))
    again = batch_indices(n, 0, 3, 0, 0, 1, (2, 1))
    assert torch.equal(again, seen[6:8])
    ranks = [batch_indices(n, 0, 0, 0, r, 2, (2, 1)) for r in range(2)]
    assert not set(ranks[0].tolist()) & set(ranks[1].tolist())

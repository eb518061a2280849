import csv
import json

from layerskip.bench.report import format_table, write_csv, write_json


def test_csv_columns_are_the_union_in_first_seen_order(tmp_path):
    path = write_csv(tmp_path / "a" / "rows.csv", [{"arm": "ar", "speed": 1.5}, {"arm": "ss", "acceptance": 0.5}])
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["arm", "speed", "acceptance"]
    assert rows == [{"arm": "ar", "speed": "1.5", "acceptance": ""}, {"arm": "ss", "speed": "", "acceptance": "0.5"}]


def test_json_round_trips(tmp_path):
    data = {"summary": [{"arm": "ar", "speedup": None}]}
    assert json.loads(write_json(tmp_path / "x" / "r.json", data).read_text()) == data


def test_table_aligns_columns_and_formats_cells():
    table = format_table([{"arm": "autoregressive", "speedup": 1.0, "tok_s": 123.456, "k": None}],
                         ["arm", "speedup", "tok_s", "k"])
    header, row = table.splitlines()
    assert header.split() == ["arm", "speedup", "tok_s", "k"]
    assert row.split() == ["autoregressive", "1.000", "123.5", "-"]
    assert header.index("speedup") == row.index("1.000")  # columns line up

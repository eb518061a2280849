import pytest

from layerskip.bench.metrics import exact_match, quality, rouge


def test_rouge_known_pairs():
    same = rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    disjoint = rouge(["dogs bark loudly"], ["the cat sat"])
    assert disjoint == pytest.approx({"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0})
    # unigrams: 2 of 3 shared -> P = R = F = 2/3; bigrams: "the cat" of 2 -> 1/2; LCS "the cat" -> 2/3
    partial = rouge(["the cat ran"], ["the cat sat"])
    assert partial == pytest.approx({"rouge1": 2 / 3, "rouge2": 1 / 2, "rougeL": 2 / 3})


def test_rouge_is_a_mean_over_pairs():
    assert rouge(["a b", "x"], ["a b", "y"])["rouge1"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("prediction", "reference", "hit"),
    [
        (" Paris\nQuestion: next", "Paris", True),
        (" paris.", "Paris", True),
        (" The Pacific Ocean", "Pacific", False),
        ("\n\n William Shakespeare", "William Shakespeare", True),
        (" 144, since 12 x 12", "144", True),
        (" It is 1,440.", "1440", True),
        (" 143", "144", False),
        ("", "7", False),
    ],
)
def test_exact_match(prediction, reference, hit):
    assert exact_match(prediction, reference) is hit


def test_quality_by_metric():
    assert quality("exact_match", [" 7", " 8"], ["7", "7"]) == {"exact_match": 0.5}
    assert quality("none", ["x"], ["x"]) == {}
    assert quality("rouge", ["x"], [None]) == {}
    assert set(quality("rouge", ["x"], ["x"])) == {"rouge1", "rouge2", "rougeL"}

"""`layerskip generate`: JSON and human output, draft markers, and one-line errors."""

import json

import pytest

from layerskip.cli import main


def _run(capsys, *argv):
    rc = main(["generate", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_output_has_the_documented_fields(capsys, tiny_dir):
    rc, out, _ = _run(capsys, "--model", str(tiny_dir), "--prompt", "hello", "--max-new-tokens", "12",
                      "--ignore-eos", "--strategy", "self_speculative", "--exit-layer", "2", "--json")
    assert rc == 0
    d = json.loads(out)
    for key in ("text", "token_ids", "num_new_tokens", "decode_tokens_per_second", "time_to_first_token_s",
                "strategy", "exit_layer", "acceptance_rate", "mean_accepted_length", "num_drafted",
                "num_accepted"):
        assert key in d
    assert d["num_new_tokens"] == len(d["token_ids"]) == 12 and d["exit_layer"] == 2


def test_human_output_streams_text_then_stats(capsys, tiny_dir):
    rc, out, err = _run(capsys, "--model", str(tiny_dir), "--prompt", "hello", "--max-new-tokens", "8",
                        "--ignore-eos", "--strategy", "early_exit", "--exit-layer", "1")
    assert rc == 0 and out.endswith("\n")
    assert "8 new tokens" in err and "tok/s" in err and "exit layer 1" in err


def test_show_drafts_marks_rejected_drafts_without_a_tty(capsys, tiny_dir):
    rc, out, _ = _run(capsys, "--model", str(tiny_dir), "--prompt", "hello", "--max-new-tokens", "30",
                      "--ignore-eos", "--strategy", "self_speculative", "--exit-layer", "1", "--show-drafts")
    assert rc == 0 and "[-" in out  # a random model's 1-layer drafts are mostly rejected


def test_chat_mode_uses_the_template(capsys, tiny_dir):
    rc, out, _ = _run(capsys, "--model", str(tiny_dir), "--prompt", "hi", "--chat", "--max-new-tokens", "4",
                      "--ignore-eos", "--json")
    assert rc == 0 and json.loads(out)["prompt_tokens"] == 5  # <user> h i </s> <assistant>


@pytest.mark.parametrize("argv,needle", [
    (["--prompt", "hi", "--model", "/does/not/exist"], "not found"),
    (["--prompt", "hi", "--temperature", "-1"], "temperature"),
    (["--prompt", "hi", "--top-p", "0"], "top_p"),
    (["--prompt", "hi", "--top-p", "1.5"], "top_p"),
    (["--prompt", "hi", "--num-speculations", "0", "--strategy", "self_speculative"], "num_speculations"),
    (["--prompt", "hi", "--strategy", "early_exit", "--exit-layer", "0"], "exit layer"),
])
def test_bad_input_is_a_one_line_error(capsys, argv, needle):
    rc, _, err = _run(capsys, *argv)
    assert rc == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv,needle", [
    (["--strategy", "early_exit", "--exit-layer", "5"], "exit layer must be in 1..4"),
    (["--strategy", "self_speculative", "--exit-layer", "4"], "1..3"),
    (["--max-new-tokens", "600"], "context"),
    (["--prompt", "   "], "empty"),  # found after loading: on the tiny model, not the default one
])
def test_bad_input_needing_the_model_is_a_one_line_error(capsys, tiny_dir, argv, needle):
    rc, _, err = _run(capsys, "--model", str(tiny_dir), "--prompt", "hello", *argv)
    assert rc == 2 and needle in err and err.count("\n") == 1


def test_prompt_longer_than_the_context(capsys, tiny_dir):
    rc, _, err = _run(capsys, "--model", str(tiny_dir), "--prompt", "x" * 600, "--max-new-tokens", "1")
    assert rc == 2 and "exceeds the model's context" in err

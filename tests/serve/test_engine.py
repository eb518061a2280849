from layerskip.serve.engine import releasable


def test_releasable_cuts_at_a_stop_string():
    assert releasable("hello world. more", ["."]) == "hello world"
    assert releasable("a STOP b STOP", ["STOP", "b"]) == "a "


def test_releasable_holds_back_a_possible_stop_prefix():
    assert releasable("hello wor", ["world!"]) == "hello "
    assert releasable("hello wor", ["xyz"]) == "hello wor"
    assert releasable("ab", ["abc", "bz"]) == ""


def test_releasable_without_stop_strings_is_the_text():
    assert releasable("anything", []) == "anything"

"""A command whose optional extra is missing says, in one line, which extra to install, and exits
2. The absence is simulated in a fresh interpreter (None in sys.modules makes an import fail and
find_spec answer None), so an import of the extra at module level would show as a traceback."""

import json
import subprocess
import sys

import pytest

from layerskip.commands import extras
from layerskip.commands.extras import EXTRAS, require_extra
from layerskip.errors import LayerSkipError

COMMANDS = {  # extra -> the commands that need it, with arguments they would run with
    "bench": [["bench", "--output-dir", "out"], ["sweep", "--output-dir", "out"],
              ["analyze", "--output-dir", "out"], ["tune"]],
    "eval": [["eval", "--tasks", "layerskip_mc"]],
    "serve": [["serve"]],
    "train": [["train", "--config", "train_smollm2_cpu.yaml"]],  # a LoRA config: peft is needed
}

SCRIPT = """
import contextlib, io, json, sys
for name in {hidden!r}:
    sys.modules[name] = None
from layerskip.cli import main
out = []
for argv in {argvs!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    out.append([rc, err.getvalue()])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def without_extras(tmp_path_factory) -> dict[str, list[tuple[int, str]]]:
    """Every command run once, in one interpreter where no extra is installed."""
    argvs = [argv for extra in COMMANDS for argv in COMMANDS[extra]]
    hidden = [m for modules in EXTRAS.values() for m in modules]
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(hidden=hidden, argvs=argvs)], capture_output=True,
                          text=True, cwd=tmp_path_factory.mktemp("extras"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = iter(json.loads(proc.stdout.splitlines()[-1]))
    return {extra: [tuple(next(results)) for _ in COMMANDS[extra]] for extra in COMMANDS}


@pytest.mark.parametrize("extra", list(COMMANDS))
def test_missing_extra_is_one_line_and_exit_2(without_extras, extra):
    for rc, err in without_extras[extra]:
        assert rc == 2
        (line,) = err.splitlines()
        assert line.startswith("error: ") and line.endswith(f"pip install 'layerskip[{extra}]'")


def test_commands_cover_every_extra():
    assert set(COMMANDS) == set(EXTRAS)


def test_require_extra_names_the_missing_modules(monkeypatch):
    require_extra("bench")  # installed here
    monkeypatch.setattr(extras, "find_spec", lambda name: None if name == "rouge_score" else 1)
    with pytest.raises(LayerSkipError, match=r"\(rouge_score not installed\): pip install 'layerskip\[bench\]'"):
        require_extra("bench")

"""`layerskip chat` driven through a pty as a user would: two turns, /stats, /reset, Ctrl-C in the
middle of a reply (the chat goes on), /exit."""

import os
import platform
import pty
import signal
import sys
import time
from pathlib import Path

import pytest

from layerskip.cli import main
from tests.conftest import make_model_dir

REPLY = 8  # tokens per reply
XOFF, XON = "\x13", "\x11"  # the terminal's stop and start of output (Ctrl-S, Ctrl-Q)
WRITE = {"aarch64": "64"}.get(platform.machine(), "1")  # write(2)'s number in /proc/PID/syscall (x86_64: 1)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("chat"), seed=2, std=0.2, max_seq_len=1024, dim=32, n_heads=2,
                          n_kv_heads=1, intermediate_size=64)


class Terminal:
    """The chat command in a child process on a pty; `expect` reads until a text appears."""

    def __init__(self, argv: list[str]):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the CLI on the pty
            # Ctrl-C as at a terminal: pytest started in the background (`cmd &` in a script) has
            # SIGINT ignored, and an ignored signal stays ignored through exec
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execv(sys.executable, [sys.executable, "-m", "layerskip.cli", *argv])
        self.seen, self.pos = "", 0  # the transcript, and how far `expect` has consumed it

    def expect(self, text: str, timeout: float = 120.0) -> str:
        """The transcript from the last match through the next `text`; fails after `timeout` s."""
        deadline = time.monotonic() + timeout
        while text not in self.seen[self.pos:]:
            assert time.monotonic() < deadline, f"no {text!r} in {self.seen[self.pos:]!r}"
            self.seen += os.read(self.fd, 4096).decode(errors="replace")
        start, self.pos = self.pos, self.seen.index(text, self.pos) + len(text)
        return self.seen[start:self.pos]

    def send(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    def interrupt_first_write(self, line: str) -> str:
        """Send `line` with the terminal's output stopped, so that the reply's first token blocks the
        chat in write(2); Ctrl-C (SIGINT) then lands inside the reply whatever the machine's load.
        Returns the chat's signal masks at that moment (/proc/PID/status), for a failure message."""
        os.write(self.fd, XOFF.encode())
        self.send(line)
        deadline = time.monotonic() + 120.0
        while (syscall := Path(f"/proc/{self.pid}/syscall").read_text()).split()[0] != WRITE:
            assert time.monotonic() < deadline, "the reply never wrote"
            time.sleep(0.01)
        status = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        os.kill(self.pid, signal.SIGINT)
        os.write(self.fd, XON.encode())
        return " ".join([syscall.strip(), *(x for x in status if x.startswith(("Sig", "State")))])

    def close(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def test_two_turns_reset_ctrl_c_mid_reply_and_exit(chat_model):
    term = Terminal(["chat", "--model", str(chat_model), "--max-new-tokens", str(REPLY), "--ignore-eos"])
    term.expect(">>> ")
    term.send("hello")
    term.expect(">>> ")
    term.send("/stats")
    stats = term.expect(">>> ")
    assert f"{REPLY} new tokens" in stats and "tok/s" in stats
    term.send("and again")
    term.expect(">>> ")
    term.send("/reset")
    assert "(conversation reset)" in term.expect(">>> ")
    at_signal = term.interrupt_first_write("a reply to stop")
    assert "(stopped)" in (stopped := term.expect(">>> ")), (stopped, at_signal)
    term.send("/stats")  # the chat goes on; a stopped reply has no figures (and /reset forgot the others)
    assert "(no finished reply yet)" in term.expect(">>> ")
    term.send("/exit")
    assert term.close() == 0


def test_a_model_without_chat_template_is_a_one_line_error(tmp_path, capsys):
    path = make_model_dir(tmp_path)
    (path / "tokenizer_config.json").write_text(
        (path / "tokenizer_config.json").read_text().replace('"chat_template"', '"unused_template"'))
    (path / "chat_template.jinja").unlink(missing_ok=True)
    assert main(["chat", "--model", str(path)]) == 2
    assert "no chat template" in capsys.readouterr().err

"""`layerskip serve` flags become a validated ServerConfig; bad flags fail before the port opens."""

from __future__ import annotations

from layerskip.cli import build_parser, main
from layerskip.commands.serve import server_config
from layerskip.model.loading import DEFAULT_MODEL


def parse(*argv: str):
    return build_parser("serve").parse_args(["serve", *argv])


def test_flags_become_the_server_config(monkeypatch):
    monkeypatch.delenv("LAYERSKIP_API_KEY", raising=False)
    cfg = server_config(parse("--port", "9000", "--strategy", "self_speculative", "--exit-layer", "3",
                              "--num-speculations", "4", "--max-queue", "2", "--timeout", "5", "--max-tokens-limit",
                              "100", "--max-new-tokens", "50"))
    assert (cfg.host, cfg.port, cfg.api_key, cfg.max_queue, cfg.timeout_s, cfg.max_tokens) == (
        "127.0.0.1", 9000, None, 2, 5.0, 100)
    g = cfg.generation
    assert (g.strategy, g.exit_layer, g.num_speculations, g.max_new_tokens) == ("self_speculative", 3, 4, 50)
    assert cfg.served_model_name == DEFAULT_MODEL


def test_api_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("LAYERSKIP_API_KEY", "secret")
    assert server_config(parse()).api_key == "secret"
    assert server_config(parse("--api-key", "flag")).api_key == "flag"


def test_bad_flags_and_missing_models_exit_2_without_serving(tmp_path, capsys):
    assert main(["serve", "--max-queue", "0"]) == 2
    assert "max_queue" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err

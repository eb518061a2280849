"""Optional extras: a command whose extra is not installed says which one to install, in one line
(the CLI prints it and exits 2), instead of failing on an import deep inside it."""

from __future__ import annotations

from importlib.util import find_spec

from layerskip.errors import LayerSkipError

# extra (pyproject's optional-dependencies) -> the modules the commands import from it
EXTRAS: dict[str, tuple[str, ...]] = {
    "bench": ("matplotlib", "rouge_score"),
    "eval": ("lm_eval",),
    "serve": ("fastapi", "uvicorn", "prometheus_client"),
    "train": ("peft",),
}


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The modules that cannot be imported (found without importing them)."""
    return [m for m in modules if find_spec(m) is None]


def require_extra(extra: str) -> None:
    """Raise a LayerSkipError naming `pip install 'layerskip[extra]'` unless the extra is installed."""
    missing = missing_modules(EXTRAS[extra])
    if missing:
        raise LayerSkipError(
            f"this command needs the '{extra}' extra ({', '.join(missing)} not installed): "
            f"pip install 'layerskip[{extra}]'"
        )

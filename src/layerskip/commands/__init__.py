"""CLI entry points; each module exposes `add_arguments(parser)` and `run(args) -> int`."""

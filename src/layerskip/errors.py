"""User-facing errors: the CLI prints their message on one line and exits non-zero."""


class LayerSkipError(Exception):
    """A problem with the user's input (path, model, parameter) rather than a bug."""

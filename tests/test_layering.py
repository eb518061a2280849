"""Dependencies run one way: model -> generation -> components (bench, eval, serve, training) ->
commands and cli. Read from the source (every import, function-level ones included), not from
what happens to be loaded."""

import ast
from pathlib import Path

import pytest

import layerskip

SRC = Path(layerskip.__file__).parent
ALLOWED = {  # layer -> the only layerskip modules and packages its modules may import
    "layerskip.model": ("layerskip.model", "layerskip.errors", "layerskip.cache_paths"),
    "layerskip.generation": ("layerskip.model", "layerskip.generation", "layerskip.errors", "layerskip.cache_paths"),
}
ENTRY_POINTS = ("layerskip.commands", "layerskip.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The layerskip modules a file imports, anywhere in it (lazy imports in functions too);
    `from a.b import c` counts as importing a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if within(name, "layerskip")}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


MODULES = {module_name(p): imports(p) for p in sorted(SRC.rglob("*.py"))}


@pytest.mark.parametrize("layer", list(ALLOWED))
def test_lower_layers_import_nothing_above_them(layer):
    bad = [f"{module} imports {name}" for module, names in MODULES.items() if within(module, layer)
           for name in sorted(names) if not any(within(name, ok) for ok in ALLOWED[layer])]
    assert bad == []


def test_only_entry_points_import_commands():
    bad = [f"{module} imports {name}" for module, names in MODULES.items()
           if not any(within(module, e) for e in ENTRY_POINTS)
           for name in sorted(names) if any(within(name, e) for e in ENTRY_POINTS)]
    assert bad == []


def test_lazy_and_package_imports_are_seen():
    """The checks are only as good as the parse: imports inside functions must be found."""
    assert "layerskip.bench.plots" in MODULES["layerskip.commands.sweep"]  # imported inside run()
    assert "layerskip.training.trainer" in MODULES["layerskip.commands.train"]
    assert "layerskip" in MODULES["layerskip.cli"]  # from layerskip import __version__

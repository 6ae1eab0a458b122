"""The documentation (issue #24): a README that fits on a few screens, relative links that resolve, a MkDocs site
that builds strictly, and a configuration reference that names every key of the schema."""

import html
import importlib.util
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import PROJECT

README_MAX_LINES = 250
DOCS = PROJECT / "docs"
#: Markdown files whose relative links must resolve (the site's pages are also checked by `mkdocs build --strict`).
LINKED_FILES = [PROJECT / "README.md", PROJECT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
#: An inline link or image, ``[text](target)``; the target up to the first space or ``)``.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _load_hook():
    """docs/hooks/config_reference.py as a module (it is a MkDocs hook, not part of the package)."""
    spec = importlib.util.spec_from_file_location("config_reference", DOCS / "hooks" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension (MkDocs' default) gives a heading."""
    from markdown.extensions.toc import slugify

    return slugify(re.sub(r"[`*]", "", heading), "-")


def _anchors(path) -> set[str]:
    """The anchors of the headings of a Markdown file (outside code blocks)."""
    text = FENCE.sub("", path.read_text())
    return {_slug(line.lstrip("#").strip()) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def _links(path) -> list[str]:
    """The relative link targets of a Markdown file, code blocks and code spans left out."""
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text()))
    return [target for target in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:|#|/", target)]


def test_readme_fits_on_a_few_screens():
    n_lines = len((PROJECT / "README.md").read_text().splitlines())
    assert n_lines <= README_MAX_LINES, f"README.md has {n_lines} lines, at most {README_MAX_LINES}"


def test_slug_matches_the_toc_extension():
    """The anchor helper itself: as MkDocs writes them (punctuation dropped, underscores kept, lower case)."""
    assert _slug("Assumptions (where the study is silent)") == "assumptions-where-the-study-is-silent"
    assert _slug("The offline demo's data") == "the-offline-demos-data"
    assert _slug("Same results after a change (`compare_demo.py`)") == "same-results-after-a-change-compare_demopy"


@pytest.mark.parametrize("path", LINKED_FILES, ids=lambda p: str(p.relative_to(PROJECT)))
def test_relative_links_resolve(path):
    """Every relative link of README.md, CHANGELOG.md and docs/*.md names an existing file, and its #anchor
    (where the target is a Markdown file of the repository) a heading of that file."""
    broken = []
    for target in _links(path):
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {resolved.name}")
    assert not broken, f"{path.name}: broken links:\n" + "\n".join(broken)


def test_readme_links_to_every_docs_page():
    """The README is the entry point: each page of the site is one link away from it."""
    linked = {(PROJECT / target.partition("#")[0]).resolve() for target in _links(PROJECT / "README.md")}
    missing = [page.name for page in sorted(DOCS.glob("*.md")) if page.resolve() not in linked]
    assert missing == ["changelog.md"], f"docs pages the README does not link to: {missing}"


def test_every_docs_page_is_in_the_nav():
    nav = yaml.safe_load((PROJECT / "mkdocs.yml").read_text())["nav"]

    def pages(entries):
        for entry in entries:
            for value in entry.values() if isinstance(entry, dict) else [entry]:
                yield from pages(value) if isinstance(value, list) else [value]

    assert sorted(pages(nav)) == sorted(page.name for page in DOCS.glob("*.md"))


def _schema_leaves(node: dict, schema: dict, path: str = "") -> set[str]:
    """The leaf keys of the schema, walked independently of the hook: nested properties, $refs into $defs, maps
    (additionalProperties) with a ``<...>`` placeholder for their free keys."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    children = {f"{path}.{key}" if path else key: child for key, child in node.get("properties", {}).items()}
    values = node.get("additionalProperties")
    if isinstance(values, dict):
        children[f"{path}.<*>"] = values
    if not children:
        return {path}
    return set().union(*(_schema_leaves(child, schema, child_path) for child_path, child in children.items()))


def _table_keys(table: str) -> list[str]:
    """The keys of the reference table's rows, as written in the config (``<code>a.<wbr>b</code>`` -> ``a.b``)."""
    cells = re.findall(r"^\| <code>(.+?)</code> \|", table, re.M)
    return [html.unescape(cell.replace("<wbr>", "")) for cell in cells]


def test_configuration_reference_names_every_schema_key():
    """The generated table has a row for every leaf key of the schema (placeholders compared as ``<*>``), and for a
    few keys known by name."""
    hook = _load_hook()
    schema, config = hook.load()
    keys = _table_keys(hook.reference(schema, config))
    assert len(keys) == len(set(keys)), "a key has two rows"
    assert _schema_leaves(schema, schema) - {""} <= {re.sub(r"<[a-z]+>", "<*>", key) for key in keys}
    for key in ["telemetry.idle_s", "networks.<id>.num_steps", "target_accuracy.factor", "data.root", "precision"]:
        assert key in keys, key
    assert set(hook.leaf_keys(schema)) <= set(keys)


def test_configuration_reference_replaces_its_marker_only():
    hook = _load_hook()
    page = f"# Configuration\n\n{hook.MARKER}\n\nProse.\n"
    out = hook.on_page_markdown(page, page=None, config=None, files=None)
    assert hook.MARKER not in out and "telemetry.idle_s" in _table_keys(out) and out.endswith("Prose.\n")
    assert hook.on_page_markdown("# Other\n", page=None, config=None, files=None) == "# Other\n"
    assert hook.MARKER in (DOCS / "configuration.md").read_text()


def test_configuration_reference_escapes_markup():
    """Descriptions reach the table as text: < > | * outside code spans escaped, an unpaired backtick too."""
    escape = _load_hook()._escape
    assert escape("id <network>-x, `<id>_snntorch` a|b") == "id &lt;network&gt;-x, `<id>_snntorch` a&#124;b"
    assert escape("without < > & ` | * here") == "without &lt; &gt; &amp; &#96; &#124; \\* here"


def test_mkdocs_build_is_strict_clean(tmp_path):
    """`mkdocs build --strict` succeeds: every nav page exists, no broken link or anchor, the snippets
    (benchmarks/README.md, CHANGELOG.md) found, and the configuration reference rendered into the page."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[test]' brings it")
    pytest.importorskip("material", reason="mkdocs-material is not installed: pip install -e '.[test]' brings it")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"NO_MKDOCS_2_WARNING": "1", **os.environ},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    configuration = (site / "configuration" / "index.html").read_text().replace("<wbr>", "")
    assert "telemetry.idle_s" in configuration and "config-reference" not in configuration
    assert "bench_training.py" in (site / "benchmarks" / "index.html").read_text()
    assert "Unreleased" in (site / "changelog" / "index.html").read_text()

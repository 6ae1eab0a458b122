"""MkDocs hook: the configuration reference, generated from ``schemas/config.schema.yaml``.

A page that holds the marker ``<!-- config-reference -->`` gets it replaced by a table of every key of the
schema: its dotted path, its type (with the allowed values and bounds), its default, the value ``config.yaml``
gives it, and the schema's ``description`` (or a note that the schema has none). The walk follows nested
``properties``, maps (``additionalProperties`` with a schema of their own: ``networks.<id>``, ``sweeps.<name>``,
``energy_model.custom.<name>``) and ``$ref``s into ``$defs``. ``python docs/hooks/config_reference.py`` prints
the table.
"""

from __future__ import annotations

from pathlib import Path

import yaml

MARKER = "<!-- config-reference -->"
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "schemas" / "config.schema.yaml"
CONFIG = ROOT / "config.yaml"

#: The name a map's key stands for in a dotted path (any other map: ``<name>``).
PLACEHOLDERS = {"networks": "<id>", "val_acc_pct": "<experiment>"}
NO_DESCRIPTION = "*(no description in the schema)*"


def _resolve(node: dict, schema: dict) -> dict:
    """``node`` with a ``$ref`` into the schema (``#/$defs/...``) replaced by what it points to."""
    while isinstance(node, dict) and "$ref" in node:
        target = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _is_map(node: dict) -> bool:
    """Whether ``node`` is an object whose keys are free names (its values described by ``additionalProperties``)."""
    return isinstance(node.get("additionalProperties"), dict) and not node.get("properties")


def walk(schema: dict) -> list[tuple[str, dict, bool]]:
    """Every key of the schema as ``(dotted path, its schema, required)``, parents before their children, in the
    schema's order. A map contributes one key for its values (``networks.<id>``); a map whose values are objects
    also contributes their keys (``networks.<id>.num_steps``). A sweep's setting is ``sweeps.<name>.<setting>``."""
    rows: list[tuple[str, dict, bool]] = []

    def visit(node: dict, path: str) -> None:
        node = _resolve(node, schema)
        required = set(node.get("required", []))
        for key, child in node.get("properties", {}).items():
            child_path = f"{path}.{key}" if path else key
            rows.append((child_path, _resolve(child, schema), key in required))
            visit(child, child_path)
        if _is_map(node) or (node.get("properties") and isinstance(node.get("additionalProperties"), dict)):
            name = PLACEHOLDERS.get(path.rsplit(".", 1)[-1], "<setting>" if node.get("properties") else "<name>")
            child_path = f"{path}.{name}"
            child = _resolve(node["additionalProperties"], schema)
            rows.append((child_path, child, False))
            visit(child, child_path)

    visit(schema, "")
    return rows


def leaf_keys(schema: dict) -> list[str]:
    """The dotted paths of the keys that hold a value rather than more keys."""
    rows = walk(schema)
    parents = {path.rsplit(".", 1)[0] for path, _, _ in rows if "." in path}
    return [path for path, _, _ in rows if path not in parents]


def _escape(text: str) -> str:
    """``text`` safe in a Markdown table cell: ``<``, ``>``, ``|`` and ``*`` escaped outside code spans (and
    everywhere, backticks included, when the backticks do not pair up)."""
    text = " ".join(text.split())

    def plain(part: str) -> str:
        return (
            part.replace("&", "&amp;")
            .replace("<", "&lt;")
            .replace(">", "&gt;")
            .replace("|", "&#124;")
            .replace("*", "\\*")
        )

    parts = text.split("`")
    if len(parts) % 2 == 0:  # an odd number of backticks: no code spans at all
        return plain(text).replace("`", "&#96;")
    return "".join(plain(part) if i % 2 == 0 else f"`{part}`" for i, part in enumerate(parts))


def _key_cell(path: str) -> str:
    """A dotted key as inline code that a narrow column may break after its dots (``<wbr>``), not inside names."""
    text = path.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "<code>" + text.replace(".", ".<wbr>") + "</code>"


def _literal(value) -> str:
    """A value as inline code, in YAML's flow style (``data``, ``{}``, ``[a, b]``, ``null``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
    return f"`{text}`".replace("|", "&#124;")


def _bounds(node: dict) -> str:
    """The numeric and size bounds of ``node``, e.g. ``≥ 1, ≤ 600``."""
    signs = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<"}
    parts = [f"{sign} {node[key]}" for key, sign in signs.items() if key in node]
    if "minItems" in node:
        parts.append(f"≥ {node['minItems']} items")
    if node.get("uniqueItems"):
        parts.append("unique")
    return ", ".join(parts)


def type_text(node: dict) -> str:
    """The type of a key in words: ``integer ≥ 1``, ``one of `fp32`, `tf32`, `bf16```, ``array of integer``."""
    if "enum" in node:
        return "one of " + ", ".join(_literal(value) for value in node["enum"])
    kind = node.get("type", "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and isinstance(node.get("items"), dict):
        kind = f"array of {type_text(node['items'])}"
    if kind == "object" and _is_map(node):
        kind = "map"
    bounds = _bounds(node)
    separator = ", " if kind.startswith("array") else " "
    return f"{kind}{separator}{bounds}" if bounds else kind


def _config_value(config: dict, path: str, node: dict, schema: dict) -> str:
    """``config.yaml``'s value at ``path`` as inline code; empty where it has none, inside a map (``<id>``), for a
    section and for a map of sections (``networks``: their keys have rows of their own)."""
    values = node.get("additionalProperties")
    if (
        "<" in path
        or node.get("properties")
        or (isinstance(values, dict) and _resolve(values, schema).get("properties"))
    ):
        return ""
    value = config
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return ""
        value = value[part]
    return _literal(value)


def _conditions(schema: dict) -> list[str]:
    """The network entry's conditional requirements (its ``allOf`` of ``if``/``then``) in words."""
    lines = []
    for rule in schema.get("$defs", {}).get("network", {}).get("allOf", []):
        tests = []
        for key, test in rule["if"].get("properties", {}).items():
            values = [test["const"]] if "const" in test else test.get("enum", [])
            tests.append(f"`{key}` is " + " or ".join(f"`{value}`" for value in values))
        needed = ", ".join(f"`{key}`" for key in rule["then"].get("required", []))
        lines.append(f"- where {' and '.join(tests)}: {needed} required")
    return lines


def reference(schema: dict, config: dict) -> str:
    """The Markdown of the configuration reference: the table of every key, then the networks' conditions."""
    lines = [
        "| key | type | default | in config.yaml | description |",
        "|---|---|---|---|---|",
    ]
    for path, node, required in walk(schema):
        default = _literal(node["default"]) if "default" in node else ("required" if required else "")
        description = _escape(node["description"]) if "description" in node else NO_DESCRIPTION
        key = _key_cell(path)
        lines.append(
            f"| {key} | {type_text(node)} | {default} | {_config_value(config, path, node, schema)} | {description} |"
        )
    conditions = _conditions(schema)
    if conditions:
        lines += ["", "A network entry (`networks.<id>`) also needs:", "", *conditions]
    return "\n".join(lines)


def load() -> tuple[dict, dict]:
    """The schema and ``config.yaml``, as the workflow reads them."""
    return yaml.safe_load(SCHEMA.read_text()), yaml.safe_load(CONFIG.read_text())


def on_page_markdown(markdown: str, page, config, files) -> str:
    """MkDocs hook: replace the marker by the reference (pages without the marker are returned unchanged)."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference(*load()))


def undescribed(schema: dict) -> list[str]:
    """The dotted paths of the keys that have no ``description`` in the schema."""
    return [path for path, node, _ in walk(schema) if "description" not in node]


if __name__ == "__main__":
    print(reference(*load()))
    print("\nwithout a description:", ", ".join(undescribed(load()[0])))

"""The one YAML loader of the repository: plain data only, bounded in size and in alias expansion.

A YAML document is user input (`--set-file`, `--study-file`, a `--set` spec). `yaml.safe_load` alone
already refuses Python objects, but it raises a multi-line `YAMLError`, reads a file of any size, and builds a 300-byte
"billion laughs" document (nine levels of aliases, each repeating the one above nine times) as shared
lists that explode to a billion items as soon as anything walks or prints them. Here the document is
composed into YAML's node graph (aliases stay references, so this is cheap), the graph's expanded size is
counted once per distinct node, and only a document within the bounds, holding only plain tags (strings,
numbers, booleans, null, lists and mappings), is turned into Python values. Every refusal is a ValueError
of one short line that names the source and never quotes the document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_BYTES = 64 * 1024
"""The largest document read; a search-space file is a few hundred bytes."""
MAX_NODES = 10_000
"""The most values a document may hold once every alias is expanded (a space has a few dozen)."""
PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
)


def load_yaml_file(path: str | Path, *, source: str) -> Any:
    """The plain data in the YAML file at `path`; `source` names it in errors (e.g. `--space-file x.yaml`).

    Raises:
        ValueError: for a missing, oversized, malformed or non-plain document.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{source}: no such file")
    with path.open("rb") as file:  # read one byte past the bound rather than trusting the size a stat gives
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ValueError(f"{source}: larger than {MAX_BYTES // 1024} KiB; a YAML file here is a few lines")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{source}: not UTF-8 text (byte {error.start})") from None
    return load_yaml(text, source=source)


def load_yaml(text: str, *, source: str) -> Any:
    """The plain data in the YAML document `text` (None for an empty one).

    Raises:
        ValueError: for an oversized or malformed document, more than one document, a tag other than the
            plain ones, a recursive alias, or more than `MAX_NODES` values once aliases are expanded.
    """
    import yaml

    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise ValueError(f"{source}: larger than {MAX_BYTES // 1024} KiB; a YAML value here is a few lines")
    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_plain(node, source=source)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        where = f" (line {error.problem_mark.line + 1}, column {error.problem_mark.column + 1})"
        problem = _short(error.problem or error.context or type(error).__name__)
        raise ValueError(
            f"{source}: cannot read it as YAML: {problem}{where if error.problem_mark else ''}"
        ) from None
    except yaml.YAMLError as error:
        raise ValueError(f"{source}: cannot read it as YAML: {_short(str(error))}") from None
    except RecursionError:  # the pure-Python parser, where libyaml (which stops at depth 1000) is missing
        raise ValueError(f"{source}: cannot read it as YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _check_plain(root: Any, *, source: str) -> None:
    """Refuse a tag that is not plain data, an alias cycle, or a graph that expands past `MAX_NODES`.

    Each distinct node is visited once; its expanded size (itself plus its children's expanded sizes) is
    memoised, so a document that expands exponentially is measured in time linear in its length.
    """
    import yaml

    expanded: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            children = _children(node)
            expanded[key] = 1 + sum(expanded[id(child)] for child in children)
            if expanded[key] > MAX_NODES:
                raise ValueError(
                    f"{source}: more than {MAX_NODES:,} values once its aliases are expanded "
                    "(an alias bomb?); write the values out"
                )
            continue
        if key in expanded:
            continue
        if key in on_path:
            raise ValueError(f"{source}: a recursive alias (an anchor used inside itself)")
        if node.tag not in PLAIN_TAGS:
            raise ValueError(
                f"{source}: the YAML tag {_short(node.tag.replace('tag:yaml.org,2002:', '!!'))} is not accepted; only strings, numbers, booleans, "
                "null, lists and mappings"
            )
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise ValueError(f"{source}: YAML merge keys (<<) are not accepted; write the keys out")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in expanded)


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _short(text: str, limit: int = 80) -> str:
    """One line of at most `limit` characters (a YAML error can quote the document)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."

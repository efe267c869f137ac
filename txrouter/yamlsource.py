"""
Load YAML with the line of every key and item, and catch duplicate keys.

PyYAML's safe loader silently keeps the last of two equal keys and forgets
where values came from. L{load_yaml} builds the same plain data, but every
mapping is a L{LocatedDict} and every list a L{LocatedList} that remember the
line of each key or item, and a key given twice in one mapping is reported.

Lists and mappings may nest at most L{MAX_DEPTH} levels deep, aliases
included: composing and constructing YAML recurse once per level, and a
file nested thousands of levels deep would otherwise end in a
C{RecursionError} instead of a message.

    >>> data, duplicates = load_yaml("a: 1\\nb: {c: 2}\\n")
    >>> data.line_of("b")
    2
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

__all__ = [
    "MAX_DEPTH",
    "Duplicate",
    "LocatedDict",
    "LocatedList",
    "TooDeep",
    "load_yaml",
]

#: How many levels of lists and mappings may nest. A routes file needs
#: about five; the loader recurses about three Python frames per level, so
#: this keeps well below Python's recursion limit of 1000.
MAX_DEPTH = 100


class LocatedDict(dict[Any, Any]):
    """
    A mapping that knows its own line and the line of each of its keys.
    """

    line: int
    key_lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        """
        @return: the 1-based line of C{key}, or of the mapping itself.
        """
        return self.key_lines.get(key, self.line)


class LocatedList(list[Any]):
    """
    A list that knows its own line and the line of each item.
    """

    line: int
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        """
        @return: the 1-based line of item C{index}.
        """
        return self.item_lines[index]


class TooDeep(yaml.YAMLError):
    """
    Lists and mappings nest more than L{MAX_DEPTH} levels deep.

    @ivar line: the 1-based line where the level one too many begins.
    """

    def __init__(self, line: int) -> None:
        super().__init__(
            f"nested too deeply (more than {MAX_DEPTH} levels of lists and "
            "mappings); a routes file needs only a few: look for a stray '[' "
            "or '{', or an alias that repeats a deep value"
        )
        self.line = line


class Duplicate:
    """
    A key that appears twice in one mapping.

    @ivar mapping: the mapping that holds it, to find its place in the data.
    """

    def __init__(
        self, key: Any, first_line: int, line: int, mapping: LocatedDict
    ) -> None:
        self.key = key
        self.first_line = first_line
        self.line = line
        self.mapping = mapping


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Loader(yaml.SafeLoader):
    """
    The safe loader, building located containers, with a depth limit.

    @ivar depth: how many lists and mappings enclose the node being composed.
    @ivar heights: how many levels of lists and mappings each composed
        collection holds, itself included (scalars hold none), so that an
        alias is measured by what it repeats.
    """

    duplicates: list[Duplicate]
    depth: int
    heights: dict[yaml.Node, int]

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            # An alias inside the collection it names has no height yet:
            # the constructor refuses such a recursive value anyway.
            self._check_depth(self.depth + self._height(node), event)
            return node
        if not isinstance(event, yaml.CollectionStartEvent):
            return super().compose_node(parent, index)
        self.depth += 1
        self._check_depth(self.depth, event)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        children = node.value if isinstance(node, yaml.SequenceNode) else []
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        if node is not None:
            self.heights[node] = 1 + max(map(self._height, children), default=0)
        return node

    def _height(self, node: yaml.Node | None) -> int:
        return 0 if node is None else self.heights.get(node, 0)

    def _check_depth(self, depth: int, event: yaml.Event) -> None:
        if depth > MAX_DEPTH:
            mark = event.start_mark
            raise TooDeep(0 if mark is None else mark.line + 1)

    def construct_located_mapping(
        self, node: yaml.MappingNode
    ) -> Iterator[LocatedDict]:
        data = LocatedDict()
        data.line = _line(node)
        data.key_lines = {}
        yield data
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found an unhashable key",
                    key_node.start_mark,
                ) from None
            if first is not None:
                self.duplicates.append(Duplicate(key, first, _line(key_node), data))
            else:
                seen[key] = _line(key_node)
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            data[key] = self.construct_object(value_node, deep=True)
            # Merged keys come first: a key of this mapping overrides them.
            data.key_lines[key] = _line(key_node)

    def construct_located_sequence(
        self, node: yaml.SequenceNode
    ) -> Iterator[LocatedList]:
        data = LocatedList()
        data.line = _line(node)
        data.item_lines = [_line(child) for child in node.value]
        yield data
        data.extend(self.construct_object(child, deep=True) for child in node.value)


_Loader.add_constructor(
    "tag:yaml.org,2002:map",
    _Loader.construct_located_mapping,
)
_Loader.add_constructor(
    "tag:yaml.org,2002:seq",
    _Loader.construct_located_sequence,
)


def load_yaml(text: str) -> tuple[Any, list[Duplicate]]:
    """
    Parse one YAML document with the safe loader.

    @return: the data (mappings as L{LocatedDict}, lists as L{LocatedList})
        and the duplicate keys found.
    @raise TooDeep: lists and mappings nest more than L{MAX_DEPTH} levels.
    @raise yaml.YAMLError: the text is not valid YAML; its C{problem_mark}
        tells where.
    """
    loader = _Loader(text)
    loader.duplicates = []
    loader.depth = 0
    loader.heights = {}
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    return data, loader.duplicates

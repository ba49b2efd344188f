"""Read a pipeline file's YAML strictly: what plain YAML would load silently wrong is a problem.

A key given twice in one mapping (plain YAML keeps the last), a text holding half a character
(no gRPC message carries it), a file that is not UTF-8, a value YAML cannot build: each is
told for the file's author, with its line where it has one. Apart from the loader, which
checks what the document says; this module only makes sure it says what was written.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from videodag_service.dag.pipeline_problems import Problems

_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
UNREADABLE = object()
"""The document of a file that could not be read (a document may be None)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that notes every mapping key given twice, with its lines.

    Plain YAML keeps the last of two equal keys silently, so `params: {a: 1, a: 2}` would
    load with a value its author may not have meant. Keys brought in by a merge (`<<: *base`)
    may be overridden: only the mapping's own keys are compared.

    It also notes every text holding a lone surrogate: YAML reads `"\\ud83d\\udc65"` (an emoji
    escaped as JSON escapes it) as two halves of a character, which no gRPC message carries,
    and the server could not list its pipelines.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []
        self.unsendable: list[str] = []
        self.written_int_version: str | None = None
        """The top-level `version` as written, when YAML reads it as an integer."""
        self.written_ids: dict[object, str | None] = {}
        """Each `id` YAML read as an integer, as written (`0123` is 83 to YAML); None for an
        integer two ids written otherwise read as."""

    def construct_document(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            version = self._value_node(node, "version")
            if isinstance(version, yaml.ScalarNode) and version.tag == _INT_TAG:
                self.written_int_version = version.value
        return super().construct_document(node)

    def _value_node(self, mapping: yaml.MappingNode, key: str) -> yaml.Node | None:
        """The node `key` takes its value from, merges (`<<`) included, found as PyYAML finds it:
        on a copy, since merging rewrites the nodes, and the duplicate check reads them as written."""
        merged = mapping
        if any(isinstance(name, yaml.ScalarNode) and name.tag == _MERGE_TAG for name, _ in mapping.value):
            merged = copy.deepcopy(mapping)
            self.flatten_mapping(merged)
        found = [value for name, value in merged.value if isinstance(name, yaml.ScalarNode) and name.value == key]
        return found[-1] if found else None  # the last of equal keys is the one kept

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self._note_duplicates(node)
        for key, value in node.value:
            if (isinstance(key, yaml.ScalarNode) and key.value == "id" and isinstance(value, yaml.ScalarNode)
                    and value.tag == _INT_TAG):
                number = self.construct_object(value)
                # Two ids written otherwise that read as one number (0123 and 83): neither is told.
                same = self.written_ids.setdefault(number, value.value) == value.value
                self.written_ids[number] = value.value if same else None
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_str(self, node: yaml.ScalarNode) -> str:
        text: str = super().construct_yaml_str(node)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            half = text[error.start]
            self.unsendable.append(
                f"line {node.start_mark.line + 1}: the text \"{text.encode('utf-8', 'backslashreplace').decode()}\""
                f" holds half a character (\\u{ord(half):04x}): write the character itself, or as one \\U escape")
        return text

    def _note_duplicates(self, node: yaml.MappingNode) -> None:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first_lines:
                self.duplicates.append(f"duplicate key {key!r} on line {line} (first given on line {first_lines[key]})")
            else:
                first_lines[key] = line


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:str", _UniqueKeyLoader.construct_yaml_str)


@dataclass(frozen=True)
class PipelineYaml:
    """A pipeline file's YAML document, and what YAML lost of how some of it was written."""

    document: Any
    """The document, or UNREADABLE for a file that could not be read (a document may be None)."""
    written_int_version: str | None = None
    """The top-level `version` as written, when YAML read it as an integer."""
    written_ids: Mapping[object, str | None] = field(default_factory=dict)
    """Each `id` YAML read as an integer, by that integer: as written (None when two were)."""


def read_pipeline_yaml(path: Path, problems: Problems) -> PipelineYaml:
    """The file's YAML document (UNREADABLE when it cannot be read, the problem noted); each
    duplicate key is a problem of its own."""
    unreadable = PipelineYaml(UNREADABLE)
    if not path.exists():
        problems.add("does not exist (a link to a file that is gone?)")
        return unreadable
    if not path.is_file():  # a FIFO would block the start for good, a folder has nothing to read
        problems.add("is not a regular file")
        return unreadable
    try:
        loader = _UniqueKeyLoader(_utf8_text(path.read_bytes()))
        try:
            document = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as error:
        problems.add(f"cannot read YAML: {_syntax_problem(error)}")
        return unreadable
    except (OSError, UnicodeError, yaml.YAMLError) as error:
        problems.add(f"cannot read YAML: {error}")
        return unreadable
    except ValueError as error:  # a date YAML cannot build (month 13), or an integer of more digits than Python reads
        problems.add(f"cannot read YAML: {_value_problem(error, path)}")
        return unreadable
    except RecursionError:
        problems.add("cannot read YAML: nested too deeply")
        return unreadable
    for problem in (*loader.duplicates, *loader.unsendable):
        problems.add(problem)
    return PipelineYaml(document, loader.written_int_version, loader.written_ids)


def _syntax_problem(error: yaml.MarkedYAMLError) -> str:
    """PyYAML's account in one line, for the start's list of problems: its own runs over four
    lines and names the file "<unicode string>", having read it from text."""
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = error.problem or error.context or "not YAML"
    context = f" ({error.context})" if error.context and error.problem else ""
    tab_hint = "; indent with spaces: YAML takes no tabs there" if "'\\t'" in problem else ""
    return f"{where}{problem}{context}{tab_hint}"


def _utf8_text(content: bytes) -> str:
    """The file's text; a file that is not UTF-8 is refused naming the line, as an editor shows it,
    rather than a byte's position, and a UTF-16 one (Windows Notepad's "Unicode") as such."""
    if content.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnicodeError("the file is UTF-16: save it as UTF-8")
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as error:
        line = content.count(b"\n", 0, error.start) + 1
        byte = content[error.start]
        raise UnicodeError(f"line {line} is not UTF-8 (byte {byte:#04x}): save the file as UTF-8") from None


def _value_problem(error: ValueError, path: Path) -> str:
    """What a value YAML could not build is, said for the file's author rather than for Python."""
    limit = sys.get_int_max_str_digits()
    if "integer string conversion" not in str(error):
        return str(error)
    text = path.read_text(encoding="utf-8")
    long_number = re.search(rf"\d{{{limit + 1},}}", text)
    line = "" if long_number is None else f" on line {text.count(chr(10), 0, long_number.start()) + 1}"
    return f"an integer of more than {limit} digits{line}"

"""Reading a policy file: bytes to a validated Policy, with YAML treated as hostile.

The file is bounded in size before it is read whole; the YAML event stream is walked once for
nesting and for its size with aliases expanded before PyYAML composes anything (its composer
recurses, and an alias can make a short file of a billion values); duplicate keys and merge keys
are refused; numbers are read as plainly as they look (``010`` is not eight, ``1:30`` is not
ninety). Every failure is a PolicyError naming where, never a traceback.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, Event, ScalarEvent
from yaml.nodes import MappingNode, ScalarNode
from yaml.reader import ReaderError

from ext_proc.policy.durations import shown
from ext_proc.policy.limits import CHARS_PER_COST, MAX_DEPTH, MAX_ERRORS, MAX_FILE_BYTES, MAX_NODES
from ext_proc.policy.model import Policy, PolicyError
from ext_proc.policy.reader import build_policy

try:  # libyaml parses 30x faster: a 4 MB policy in a fraction of a second, not 20 s
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_PLAIN_BOOL = re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z")
_PLAIN_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z", re.ASCII)
_PLAIN_FLOAT = re.compile(
    r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z|[-+]?\.(?:inf|Inf|INF)\Z|\.(?:nan|NaN|NAN)\Z"
)


@dataclass(frozen=True, slots=True)
class PolicyFile:
    """A validated policy and the SHA-256 of the very bytes it was read from (what
    ``modelguard_policy_info`` shows, and how a reload tells an unchanged file)."""

    policy: Policy
    sha256: str


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raise PolicyError naming every problem."""
    return load_policy_file(path).policy


def load_policy_file(path: str | Path, regular_only: bool = False) -> PolicyFile:
    """``load_policy``, with the file's hash.

    The size is checked before reading, and the read is bounded too: a FIFO or /dev/zero has
    no size to check. ``regular_only`` (a reload) refuses anything but a regular file, judged on
    what was opened, without blocking: a FIFO with no writer would hold the read for good."""
    source = str(path)
    too_big = PolicyError([f"(file): larger than {MAX_FILE_BYTES} bytes (4 MiB), the most a policy may be"], source)
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | (os.O_NONBLOCK if regular_only else 0)), "rb") as file:
            status = os.fstat(file.fileno())
            if regular_only and not stat.S_ISREG(status.st_mode):
                raise PolicyError(["(file): not a regular file; a reload reads only regular files"], source)
            if status.st_size > MAX_FILE_BYTES:
                raise too_big
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PolicyError([f"cannot read the file: {exc.strerror or exc}"], source) from exc
    if len(data) > MAX_FILE_BYTES:
        raise too_big
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([f"not UTF-8 text: {exc.reason} at byte {exc.start}"], source) from exc
    return PolicyFile(parse_policy(text, source), hashlib.sha256(data).hexdigest())


def parse_policy(text: str, source: str = "policy") -> Policy:
    if len(text) > MAX_FILE_BYTES:
        raise PolicyError([f"(file): {len(text)} characters; a policy may be at most {MAX_FILE_BYTES}"], source)
    try:
        document = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise PolicyError([_yaml_error(exc, text)], source) from exc
    except _DuplicateKeys as exc:
        raise PolicyError(exc.errors[:MAX_ERRORS], source, max(0, len(exc.errors) - MAX_ERRORS)) from exc
    except ValueError as exc:  # an integer of more than 4300 digits, for one
        raise PolicyError([f"(yaml) cannot read a value: {str(exc)[:120]}"], source) from exc
    except RecursionError as exc:  # the depth check makes this unreachable; a traceback must be too
        raise PolicyError([f"(yaml) nesting deeper than {MAX_DEPTH} levels"], source) from exc
    return build_policy(document, source)


class _DuplicateKeys(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__(errors)
        self.errors = errors


class _Loader(_SafeLoader):
    """Safe YAML that reports every duplicate key instead of keeping the last, and refuses merges.

    A second ``models:`` would silently replace the first list. Merge keys (``<<``) are refused
    because a chain of them multiplies: ten levels of ``<<: [*a, *a, ...]`` build billions of
    pairs inside PyYAML before any check of ours could run; ``defaults`` does their job here.

    Values are only what they look like: YAML 1.1 reads ``010`` as 8, ``0x1F4`` as 500, ``5_03``
    as 503, ``1:30`` as 90 and ``yes``, ``no``, ``on``, ``off`` as booleans (``value: on`` for a
    header would be True). Here those stay strings (validation says where a number belongs), and
    an explicit ``!!int 010`` is an error rather than 8.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, int, str]] = []
        """(line, column, error): the constructor visits mappings out of file order."""

    def flatten_mapping(self, node: MappingNode) -> None:
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                message = "merge keys (<<) are not supported: put shared breaker and failure settings in defaults"
                raise ConstructorError(None, None, message, key_node.start_mark)
        super().flatten_mapping(node)
        first: dict[object, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode):
                continue  # not hashable: the constructor reports it
            key = self.construct_object(key_node)
            line, column = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key in first:
                self.duplicates.append(
                    (
                        line,
                        column,
                        f"(yaml) line {line}, column {column}: duplicate key {shown(key)}"
                        f" (first at line {first[key]}); YAML would silently keep only the last",
                    )
                )
            else:
                first[key] = line


def _plain_int(loader: _Loader, node: ScalarNode) -> int:
    """``!!int``, explicit or not, takes plain decimal only (PyYAML's own reads ``!!int 010`` as 8)."""
    value = loader.construct_scalar(node)
    if not isinstance(value, str) or not _PLAIN_INT.match(value):
        raise ConstructorError(None, None, f"{shown(value)} is not a plain whole number", node.start_mark)
    return int(value)


def _plain_float(loader: _Loader, node: ScalarNode) -> float:
    value = loader.construct_scalar(node)
    if not isinstance(value, str) or not _PLAIN_FLOAT.match(value):
        raise ConstructorError(None, None, f"{shown(value)} is not a plain number", node.start_mark)
    result: float = loader.construct_yaml_float(node)
    return result


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in (_INT_TAG, _FLOAT_TAG, _BOOL_TAG)]
    for first, resolvers in _SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_INT_TAG, _PLAIN_INT, list("-+0123456789"))
_Loader.add_implicit_resolver(_FLOAT_TAG, _PLAIN_FLOAT, list("-+0123456789."))
_Loader.add_implicit_resolver(_BOOL_TAG, _PLAIN_BOOL, list("tTfF"))
_Loader.add_constructor(_INT_TAG, _plain_int)
_Loader.add_constructor(_FLOAT_TAG, _plain_float)


def _load_yaml(text: str) -> object:
    _check_shape(text)
    loader = _Loader(text)
    try:
        document = loader.get_single_data()
    finally:
        loader.dispose()
    if loader.duplicates:
        raise _DuplicateKeys([error for _, _, error in sorted(loader.duplicates)])
    return document


def _check_shape(text: str) -> None:
    """Refuse deep nesting and too much to walk, from the event stream, before PyYAML composes it.

    The parser and scanner keep explicit stacks, so this pass is iterative, and it stops at the
    first level too deep or at the budget. The cost is counted as validation will pay it: an alias
    costs the whole anchored value again (a list of 10,000 aliases of a model with 2,000 keys costs
    20 million, though the file is 89 KB), and a scalar one more for every CHARS_PER_COST
    characters (a 3 MB string aliased a thousand times is a thousand case-folds of 3 MB)."""
    depth = cost = 0
    open_values: list[tuple[str | None, int]] = []  # (anchor, cost before it) of each open collection
    costs: dict[str, int] = {}  # an anchor's cost, as an alias to it will add
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, AliasEvent):
            cost += costs.get(event.anchor, 1) if event.anchor is not None else 1
        elif isinstance(event, ScalarEvent):
            scalar = 1 + len(event.value) // CHARS_PER_COST
            cost += scalar
            if event.anchor is not None:
                costs[event.anchor] = scalar
        elif isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                _refuse(event, f"nesting deeper than {MAX_DEPTH} levels")
            open_values.append((event.anchor, cost))
            cost += 1
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
            anchor, before = open_values.pop()
            if anchor is not None:
                costs[anchor] = cost - before
        if cost > MAX_NODES:
            _refuse(event, f"more than {MAX_NODES:,} values once aliases are expanded; a policy needs far fewer")


def _refuse(event: Event, problem: str) -> NoReturn:
    mark: Any = event.start_mark  # libyaml's Mark: the same fields, another class
    raise ComposerError(None, None, problem, mark)


def _yaml_error(exc: yaml.YAMLError, text: str) -> str:
    if isinstance(exc, ReaderError) and isinstance(exc.character, int):
        # libyaml gives a byte position, PyYAML a character one: find the character instead.
        index = text.find(chr(exc.character))
        line, column = text.count("\n", 0, index) + 1, index - text.rfind("\n", 0, index)
        return f"(yaml) line {line}, column {column}: character #x{exc.character:04x}: {exc.reason}"
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    if isinstance(context, str) and "anchor" in context:  # libyaml: "found duplicate anchor" / "second occurrence"
        problem = f"{context}: {problem}"
    if problem == "exceeded maximum nesting depth":  # libyaml's own flow limit (1000) can come first
        problem = f"nesting deeper than {MAX_DEPTH} levels"
    return f"(yaml) {where}{problem}"

# Stubs of the private native module (csrc/bindings).
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__version__: str
build_info: str

# The encoding (csrc/core/automaton.hpp): head kinds of a sub-pattern, the label of
# a call_module node whose module is missing, literal arguments.
HEAD_MATCH_ALL: int
HEAD_LABEL: int
HEAD_NEVER: int
HEAD_GETATTR: int
MISSING_MODULE: int

def literal_arg(code: int) -> int: ...
def literal_code(arg: int) -> int: ...

class MatchResult:
    @property
    def owner(self) -> list[int]: ...
    @property
    def roots(self) -> list[int]: ...
    @property
    def patterns(self) -> list[int]: ...
    @property
    def claimed(self) -> list[int]: ...
    @property
    def claimed_off(self) -> list[int]: ...
    @property
    def error(self) -> str: ...
    @property
    def error_node(self) -> int: ...
    @property
    def missing_module(self) -> bool: ...

class FlatGraph:
    def __init__(
        self, label: list[int], users: list[int], arg_off: list[int], arg: list[int]
    ) -> None: ...
    @property
    def label(self) -> list[int]: ...
    @property
    def users(self) -> list[int]: ...
    @property
    def arg_off(self) -> list[int]: ...
    @property
    def arg(self) -> list[int]: ...
    def __len__(self) -> int: ...

class Automaton:
    def __init__(
        self,
        head: list[int],
        label: list[int],
        check_args: list[int],
        child_off: list[int],
        child: list[int],
        top: list[int],
        label_is_module: list[int],
        num_labels: int,
    ) -> None: ...
    def match(self, graph: FlatGraph, exclude: list[int] = ...) -> MatchResult: ...
    @property
    def num_subpatterns(self) -> int: ...
    @property
    def num_patterns(self) -> int: ...
    @property
    def num_labels(self) -> int: ...

class Interner:
    def __init__(
        self,
        func_labels: dict[Any, int],
        method_labels: dict[str, int],
        module_type_labels: dict[type, int],
        literal_ids: dict[Any, int],
        resolve_type: Callable[[Any], int],
        node_type: type,
    ) -> None: ...
    def flatten(
        self, nodes: Iterable[Any], root: Any
    ) -> tuple[FlatGraph, list[Any], list[Any], list[int], bool, bool]: ...

class Emitter:
    def __init__(
        self,
        illegal: dict[str, Any],
        prefill: list[tuple[str, Any, bool]],
        wrap: tuple[str, Any, bool],
        node_type: type,
        immutable_list: type,
        immutable_dict: type,
        classify_value: Callable[[type], int],
        classify_callee: Callable[[Any], tuple[int, str, bool] | None],
        classify_type: Callable[[Any], tuple[str, bool] | None],
    ) -> None: ...
    def emit(
        self,
        nodes: Iterable[Any],
        root_module: str,
        return_prefix: str,
        return_suffix: str,
        gen_fn_def: Callable[[list[str], str], str],
        redirect: dict[Any, Any] = ...,
        users_from_nodes: bool = ...,
    ) -> tuple[str, dict[str, Any], dict[int, int | None], int] | str: ...

def float_repr(x: float) -> str: ...

_T = TypeVar("_T")

def shell(
    cls: type[_T], state: dict[str, Any], attrs: dict[str, Any] | None = ...
) -> _T: ...
def copies_as_deepcopy(
    state: dict[str, Any], atoms: frozenset[type], exempt: str
) -> bool: ...

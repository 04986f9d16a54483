# Types of the state codec, which is plain code because it is shipped to the runner.
from collections.abc import Callable, Container, Iterable, Mapping
from types import ModuleType
from typing import Any

PROTOCOL: int
LARGE: int
TOOLS_MODULE: str

def make_repr() -> Any: ...
def mask_addresses(text: str) -> str: ...
def qualified_name(cls: object) -> str: ...
def tools_module() -> ModuleType: ...
def tool_name(obj: object) -> str | None: ...

class Described:
    data: bytes | None
    digest: str | None
    exact: bool
    reason: str | None

class Codec:
    def __init__(self, cloudpickle: ModuleType) -> None: ...
    def describe(self, value: object, plain: bool = False) -> Described: ...
    def dump_large(self, value: object, others: Mapping[int, str] | None = None) -> bytes: ...
    def checkpoint(
        self, values: Mapping[str, Any], large: Mapping[int, str], plain: bool = False
    ) -> bytes: ...
    def restore(
        self, data: bytes, large: Mapping[str, bytes], tools: Mapping[str, Any]
    ) -> dict[str, Any]: ...

# name -> (value, its record, its description without bytes, its change check or None)
MemoEntry = tuple[Any, dict[str, Any], Described, Callable[[Any], bool] | None]

class Snapshotter:
    known: set[str]
    memo: dict[str, MemoEntry]
    def __init__(
        self,
        codec: Codec,
        shown: Any = None,
        probes: Callable[[Any], Callable[[Any], bool] | None] | None = None,
        large: int = ...,
    ) -> None: ...
    def forget_checkpoint(self) -> None: ...
    def take(
        self,
        items: Iterable[tuple[str, Any]],
        name: str | None = None,
        extra: Any = (),
        unchanged: Container[str] = (),
    ) -> dict[str, Any]: ...
    def _variable(self, value: object, plain: bool = False) -> tuple[dict[str, Any], Described]: ...

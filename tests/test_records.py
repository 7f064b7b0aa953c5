"""records.NamedTuple builds the same class typing.NamedTuple does, without importing typing."""

from __future__ import annotations

import pickle
import typing
from typing import Optional

import pytest

from mmcv_patcher import records


def _point(base: type) -> type:
    class Point(base):  # type: ignore[valid-type,misc]
        """A point."""

        x: int
        y: Optional[int] = None
        label: str = "origin"

        @property
        def both(self) -> tuple:
            return (self.x, self.y)

        def moved(self, by: int) -> "Point":
            return self._replace(x=self.x + by)

    return Point


def test_the_class_behaves_as_typing_namedtuple_builds_it() -> None:
    ours, reference = _point(records.NamedTuple), _point(typing.NamedTuple)
    for cls in (ours, reference):
        assert cls._fields == ("x", "y", "label")
        assert cls._field_defaults == {"y": None, "label": "origin"}
        assert issubclass(cls, tuple) and cls.__doc__ == "A point." and cls.__name__ == "Point"
    assert ours.__qualname__ == reference.__qualname__ and ours.__module__ == reference.__module__
    # typing wraps the (PEP 563) string annotations in ForwardRef; a plain class keeps them
    assert ours.__annotations__ == {k: getattr(v, "__forward_arg__", v) for k, v in reference.__annotations__.items()}
    a, b = ours(1), reference(1)
    assert tuple(a) == tuple(b) == (1, None, "origin") and repr(a) == repr(b)
    assert a.both == b.both == (1, None) and tuple(a.moved(2)) == tuple(b.moved(2)) == (3, None, "origin")
    assert ours(1, label="x") == (1, None, "x") and hash(ours(1)) == hash((1, None, "origin"))
    with pytest.raises(AttributeError):
        a.x = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        ours()


def test_a_field_without_a_default_after_one_with_is_refused_like_typing() -> None:
    for base in (records.NamedTuple, typing.NamedTuple):
        with pytest.raises(TypeError):

            class Bad(base):  # type: ignore[valid-type,misc]
                x: int = 0
                y: int


def test_records_of_this_package_pickle() -> None:
    from mmcv_patcher.model import Result, State

    result = Result("id", State.PATCHED, "/x/nms.py", 3, "done")
    assert pickle.loads(pickle.dumps(result)) == result

"""``NamedTuple`` for this package's value objects, without importing :mod:`typing`.

``status`` has to finish within three interpreter start-ups, and importing ``typing`` (with
``re``, which it imports) costs about one by itself, while a value object needs nothing of
it at run time: its annotations are strings (PEP 563). So the type checker sees
``typing.NamedTuple``, and the interpreter builds from the class body the same
``collections.namedtuple`` class ``typing`` would: fields in annotation order, defaults from
assigned values, methods, properties and the docstring kept. ``tests/test_records.py``
checks it against ``typing.NamedTuple``. For the same reason the modules ``status`` loads
import ``typing`` under ``TYPE_CHECKING`` only; the codemod, which loads LibCST (and with
it ``typing``), needs no such care.
"""

from __future__ import annotations

TYPE_CHECKING = False  # true for type checkers only (mypy treats this name as such)

if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    import collections

    class _NamedTupleMeta(type):
        """Turns ``class X(NamedTuple): ...`` into a ``collections.namedtuple`` class."""

        def __new__(cls, name, bases, namespace):
            if not bases:  # NamedTuple itself
                return super().__new__(cls, name, bases, namespace)
            fields = list(namespace.get("__annotations__", {}))
            defaults = []
            for field in fields:
                if field in namespace:
                    defaults.append(namespace[field])
                elif defaults:
                    raise TypeError(f"{name}: field {field} has no default but follows one that has")
            record = collections.namedtuple(name, fields, defaults=defaults, module=namespace["__module__"])
            for key, value in namespace.items():
                if key not in fields and key not in ("__module__", "__qualname__", "__annotations__"):
                    setattr(record, key, value)
            record.__qualname__ = namespace.get("__qualname__", name)
            record.__annotations__ = dict(namespace.get("__annotations__", {}))
            return record

    class NamedTuple(metaclass=_NamedTupleMeta):
        """Base class: ``class Point(NamedTuple): x: int; y: int = 0``."""

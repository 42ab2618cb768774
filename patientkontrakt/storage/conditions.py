"""Conditions built once and put into many statements, at the cost of a constant.

SQLAlchemy finds a statement's compiled form in its cache by a key it computes on every
execution, walking the whole statement. An access rule is an OR of a dozen ``EXISTS`` paths over
joined index tables, and it is in every statement a caller runs (the page of a search, its
includes, the visibility checks of a write), so walking it was a fifth of a search's CPU time.
``SharedCondition`` gives such a condition a key of its own once, and SQLAlchemy stops there.

The condition must be fixed: its constants are SQL literals or bind parameters whose values the
statement's executor passes (``Access.parameters``), never values carried by the condition. Two
conditions never share a key; a copy made by a traversal (``params``, ``replacement_traverse``)
gets a key of its own.
"""

from __future__ import annotations

import itertools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.visitors import InternalTraversal, iterate

_keys = itertools.count(1)


class SharedCondition(ColumnElement[bool]):
    inherit_cache = True  # the key is ours (_gen_cache_key); this only silences the warning
    type = sa.Boolean()
    _traverse_internals = [("condition", InternalTraversal.dp_clauseelement)]

    def __init__(self, condition: ColumnElement[bool]) -> None:
        valued = [b.key for b in iterate(condition) if isinstance(b, BindParameter) and b.value is not None]
        if valued:
            raise ValueError(f"a shared condition may not carry values (bind parameters {valued})")
        self.condition = condition
        self._key = ("shared-condition", next(_keys))

    def _gen_cache_key(self, anon_map: Any, bindparams: list[BindParameter[Any]]) -> tuple[Any, ...]:
        return self._key

    def _clone(self, **kw: Any) -> SharedCondition:
        clone: SharedCondition = super()._clone(**kw)
        clone._key = ("shared-condition", next(_keys))
        return clone

    @property
    def _from_objects(self) -> list[Any]:
        return self.condition._from_objects


@compiles(SharedCondition)
def _compile(element: SharedCondition, compiler: Any, **kw: Any) -> str:
    # Always in parentheses: the statement around it does not see that it is an OR, and
    # "x AND a OR b" would be "(x AND a) OR b".
    return f"({compiler.process(element.condition, **kw)})"

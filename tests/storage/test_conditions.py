"""``SharedCondition``: an access rule's condition, keyed once for SQLAlchemy's statement cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.sql import visitors

from patientkontrakt.storage.conditions import SharedCondition

META = sa.MetaData()
T = sa.Table("t", META, sa.Column("x", sa.Integer, primary_key=True), sa.Column("y", sa.Integer))


@pytest.fixture
def conn() -> Iterator[sa.Connection]:
    engine = sa.create_engine("sqlite://")
    META.create_all(engine)
    with engine.connect() as connection:
        connection.execute(sa.insert(T), [{"x": 1, "y": 1}, {"x": 2, "y": 2}, {"x": 3, "y": 3}])
        yield connection
    engine.dispose()


def _xs(conn: sa.Connection, statement: sa.Select[tuple[int]], **params: object) -> list[int]:
    return list(conn.execute(statement, params).scalars())


def test_an_or_inside_stays_inside_the_and_around_it(conn: sa.Connection) -> None:
    either = SharedCondition(sa.or_(T.c.y == sa.literal_column("2"), T.c.y == sa.literal_column("3")))
    assert _xs(conn, sa.select(T.c.x).where(T.c.x == 1, either)) == []
    assert _xs(conn, sa.select(T.c.x).where(T.c.x.in_([1, 2]), either)) == [2]
    assert _xs(conn, sa.select(T.c.x).where(sa.not_(either)).order_by(T.c.x)) == [1]


def test_statements_around_one_condition_share_a_compiled_form_and_keep_their_values(conn: sa.Connection) -> None:
    unit = SharedCondition(T.c.y >= sa.bindparam("acc", literal_execute=True))
    first = sa.select(T.c.x).where(T.c.x == sa.bindparam("x", 2), unit)
    second = sa.select(T.c.x).where(T.c.x == sa.bindparam("x", 3), unit)
    key1, key2 = first._generate_cache_key(), second._generate_cache_key()
    assert key1 is not None and key2 is not None
    assert key1.key == key2.key
    assert [b.value for b in key2.bindparams] == [3]
    assert _xs(conn, first, acc=2) == [2]
    assert _xs(conn, second, acc=2) == [3]
    assert _xs(conn, second, acc=4) == []  # the caller's value, not the cached statement's


def test_two_conditions_or_a_copy_never_share_a_key() -> None:
    one = SharedCondition(T.c.y == sa.literal_column("1"))
    other = SharedCondition(T.c.y == sa.literal_column("2"))
    keys = {sa.select(T.c.x).where(c)._generate_cache_key().key for c in (one, other)}  # type: ignore[union-attr]
    assert len(keys) == 2
    statement = sa.select(T.c.x).where(one)
    copied = visitors.cloned_traverse(statement, {}, {})
    assert copied._generate_cache_key().key != statement._generate_cache_key().key  # type: ignore[union-attr]


def test_a_condition_that_carries_values_is_refused() -> None:
    with pytest.raises(ValueError, match="carry values"):
        SharedCondition(T.c.y == sa.bindparam("y", 2))

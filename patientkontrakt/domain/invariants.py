"""The profiles' FHIRPath invariants compiled to Python closures, with fhirpathpy behind them.

fhirpathpy interprets an expression's tree on every call, wrapping every value it meets: the ten
or so invariants a Patientkontrakt's profile holds cost about 1.5 ms a write, half of its
validation (docs/performance.md). Our invariants use a small part of FHIRPath — paths, ``where``,
``all``, ``exists``, ``empty``, ``count``, ``not``, a few string functions, comparison and the
boolean operators — so ``compile_invariant`` turns such an expression into nested closures once,
and ``ProfileValidator`` calls them.

The closures answer only where they give what fhirpathpy gives; they are its shortcut, never a
second opinion. Anything outside the subset fails to compile (``None``: fhirpathpy evaluates the
expression), and anything a closure meets at run time that the subset leaves open — a primitive
extension (``_value``), an operand that is not a plain string, integer or boolean, a date compared,
a collection where one value is expected — raises ``Undecided``, and the caller asks fhirpathpy
for that value. Paths follow fhirpathpy's model (choice types such as ``scheduled[x]`` resolve
below a resource, by ``choiceTypePaths``; types by ``path2Type``). tests/domain/test_invariants.py
compares both on every invariant of the profiles against the examples and their variations.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# A value as fhirpathpy's ResourceNode holds it: the JSON, and its type path (or None).
Node = tuple[Any, str | None]
Collection = list[Node]
Step = Callable[[Collection], Collection]


class Undecided(Exception):
    """The compiled form cannot say what fhirpathpy would: ask fhirpathpy."""


class _Unsupported(Exception):
    """The expression is outside the compiled subset."""


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>'(?:[^'\\])*')
    | (?P<number>\d+)(?![.\d])
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>>=|<=|!=|[.()|=<>+,])
    )""", re.VERBOSE)

# Binding powers (FHIRPath §6.8's precedence, loosest first).
_INFIX = {"implies": 1, "or": 2, "and": 3, "in": 4, "=": 5, "!=": 5,
          ">": 6, "<": 6, ">=": 6, "<=": 6, "|": 7, "+": 8}
_DATES = frozenset({"date", "dateTime", "time", "instant"})


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise _Unsupported(text[pos:])
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, text: str, model: dict[str, Any]) -> None:
        self.tokens = _tokens(text)
        self.at = 0
        self.model = model

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise _Unsupported(f"expected {value!r}")
        self.at += 1
        return token

    def parse(self) -> Step:
        step = self.expression(0)
        if self.peek() is not None:
            raise _Unsupported("trailing tokens")
        return step

    def expression(self, floor: int) -> Step:
        left = self.postfix(self.term())
        while (token := self.peek()) is not None and token[0] in ("op", "name") and token[1] in _INFIX:
            power = _INFIX[token[1]]
            if power <= floor:
                break
            self.take()
            right = self.expression(power)
            left = _binary(token[1], left, right, self.model)
        return left

    def term(self) -> Step:
        kind, value = self.take()
        if kind == "string":
            if "\\" in value:
                raise _Unsupported("escapes")
            text = value[1:-1]
            return lambda _coll: [(text, "System.String")]
        if kind == "number":
            number = int(value)
            return lambda _coll: [(number, "System.Integer")]
        if value == "(":
            inner = self.expression(0)
            self.take(")")
            return inner
        if kind == "name" and value not in _INFIX:
            return self.invocation(value, first=True)
        raise _Unsupported(value)

    def postfix(self, step: Step) -> Step:
        while (token := self.peek()) is not None and token[1] == ".":
            self.take()
            kind, name = self.take()
            if kind != "name":
                raise _Unsupported(name)
            step = _then(step, self.invocation(name, first=False))
        return step

    def invocation(self, name: str, *, first: bool) -> Step:
        token = self.peek()
        if token is not None and token[1] == "(":
            self.take()
            args: list[Step] = []
            literal: list[str | None] = []
            while (token := self.peek()) is not None and token[1] != ")":
                start = self.at
                args.append(self.expression(0))
                literal.append(self.tokens[start][1][1:-1]
                               if self.at == start + 1 and self.tokens[start][0] == "string" else None)
                if (token := self.peek()) is not None and token[1] == ",":
                    self.take()
            self.take(")")
            return _function(name, args, literal)
        if name[:1].isupper():
            if not first:
                raise _Unsupported("a type name after a dot")
            return _type_filter(name)
        return _member(name, self.model)


def _then(first: Step, second: Step) -> Step:
    return lambda coll: second(first(coll))


def _type_filter(name: str) -> Step:
    def step(coll: Collection) -> Collection:
        out: Collection = []
        for data, _path in coll:
            if not isinstance(data, dict) or "resourceType" not in data:
                raise Undecided(f"{name} on a value that is not a resource")
            if data["resourceType"] == name:
                out.append((data, name))
        return out
    return step


def _member(key: str, model: dict[str, Any]) -> Step:
    elsewhere: dict[str, str] = model["pathsDefinedElsewhere"]
    choices: dict[str, list[str]] = model["choiceTypePaths"]
    types: dict[str, str] = model["path2Type"]

    def child(node: Node, out: Collection) -> None:
        data, path = node
        if isinstance(data, dict) and "resourceType" in data:
            path = data["resourceType"]
        if not isinstance(data, dict):
            raise Undecided(f"{key} of a primitive")
        child_path = f"{path}.{key}" if path else f"_.{key}"
        child_path = elsewhere.get(child_path, child_path)
        value = None
        actual = choices.get(child_path)
        if actual:
            for type_ in actual:
                field = key + type_
                if "_" + field in data:
                    raise Undecided("a primitive extension")
                value = data.get(field)
                if value is not None:
                    child_path += type_
                    break
        else:
            if "_" + key in data:
                raise Undecided("a primitive extension")
            value = data.get(key)
            if key == "extension":
                child_path = "Extension"
        child_path = types.get(child_path, child_path)
        if value is None or value == []:
            return
        for item in value if isinstance(value, list) else (value,):
            if item is None:
                raise Undecided("null in an array")
            out.append((item, item["resourceType"] if isinstance(item, dict) and "resourceType" in item
                        else child_path))

    def step(coll: Collection) -> Collection:
        out: Collection = []
        for node in coll:
            child(node, out)
        return out
    return step


def _string(coll: Collection) -> str:
    if len(coll) != 1 or not isinstance(coll[0][0], str):
        raise Undecided("not one string")
    return coll[0][0]


def _boolean(coll: Collection) -> bool | None:
    if not coll:
        return None
    if len(coll) != 1 or not isinstance(coll[0][0], bool):
        raise Undecided("not one boolean")
    return coll[0][0]


def _plain(node: Node) -> Any:
    data, path = node
    if isinstance(data, dict | list | float) or data is None:
        raise Undecided("not a plain value")
    if path in _DATES:
        raise Undecided("a date")
    return data


def _same(a: Node, b: Node) -> bool:
    x, y = _plain(a), _plain(b)
    if type(x) is not type(y):
        raise Undecided("values of different types")
    return bool(x == y)


def _result(value: bool | None) -> Collection:
    return [] if value is None else [(value, "System.Boolean")]


def _function(name: str, args: list[Step], literal: list[str | None]) -> Step:
    if name in ("exists", "empty", "count", "not", "length") and args:
        raise _Unsupported(f"{name} with arguments")
    if name == "exists":
        return lambda coll: _result(bool(coll))
    if name == "empty":
        return lambda coll: _result(not coll)
    if name == "count":
        return lambda coll: [(len(coll), "System.Integer")]
    if name == "not":
        def negate(coll: Collection) -> Collection:
            value = _boolean(coll)
            return _result(None if value is None else not value)
        return negate
    if name == "length":
        return lambda coll: [(len(_string(coll)), "System.Integer")] if coll else []
    if name in ("where", "all"):
        if len(args) != 1:
            raise _Unsupported(f"{name} takes one argument")
        criterion = args[0]
        if name == "where":
            return lambda coll: [node for node in coll if _boolean(criterion([node])) is True]
        return lambda coll: _result(all(_boolean(criterion([node])) is True for node in coll))
    if name in ("matches", "startsWith", "contains"):
        if len(args) != 1 or literal[0] is None:
            raise _Unsupported(f"{name} with an argument other than a string literal")
        argument: str = literal[0]
        if name == "matches":
            if not argument:
                raise _Unsupported("an empty pattern")
            pattern = re.compile(argument, re.DOTALL)
            return lambda coll: _result(pattern.search(_string(coll)) is not None) if coll else []
        if name == "startsWith":
            if not argument:
                raise _Unsupported("an empty prefix")
            return lambda coll: _result(_string(coll).startswith(argument)) if coll else []
        return lambda coll: _result(argument in _string(coll)) if coll else []
    raise _Unsupported(name)


def _binary(op: str, left: Step, right: Step, model: dict[str, Any]) -> Step:
    if op in ("and", "or", "implies"):
        def logic(coll: Collection) -> Collection:
            a, b = _boolean(left(coll)), _boolean(right(coll))
            if op == "and":
                value = False if a is False or b is False else (None if a is None or b is None else True)
            elif op == "or":
                value = True if a is True or b is True else (None if a is None or b is None else False)
            else:
                value = True if a is False or b is True else (None if a is None or b is None else False)
            return _result(value)
        return logic
    if op in ("=", "!="):
        def equal(coll: Collection) -> Collection:
            a, b = left(coll), right(coll)
            if not a or not b:
                return []
            if len(a) != 1 or len(b) != 1:
                raise Undecided("equality of collections")
            same = _same(a[0], b[0])
            return _result(same if op == "=" else not same)
        return equal
    if op == "in":
        def member(coll: Collection) -> Collection:
            a, b = left(coll), right(coll)
            if not a:
                return []
            if len(a) != 1:
                raise Undecided("in with a collection on the left")
            return _result(any(_same(a[0], item) for item in b))
        return member
    if op == "|":
        def union(coll: Collection) -> Collection:
            out: Collection = []
            for node in left(coll) + right(coll):
                if not any(_same(node, seen) for seen in out):
                    out.append(node)
            return out
        return union
    if op == "+":
        def plus(coll: Collection) -> Collection:
            a, b = left(coll), right(coll)
            if not a or not b:
                return []
            x, y = _integer(a), _integer(b)
            return [(x + y, "System.Integer")]
        return plus
    compare: Callable[[int, int], bool] = {
        ">": int.__gt__, "<": int.__lt__, ">=": int.__ge__, "<=": int.__le__}[op]

    def order(coll: Collection) -> Collection:
        a, b = left(coll), right(coll)
        if not a or not b:
            return []
        return _result(compare(_integer(a), _integer(b)))
    return order


def _integer(coll: Collection) -> int:
    if len(coll) != 1 or type(coll[0][0]) is not int:
        raise Undecided("not one integer")
    value: int = coll[0][0]
    return value


def compile_invariant(expression: str, model: dict[str, Any]) -> Callable[[Any], list[Any]] | None:
    """``expression`` as a function of the value it constrains, answering as fhirpathpy's
    compiled form does for ``value`` (a list: ``[True]``, ``[False]``, ``[]``, ...), or raising
    ``Undecided``; None when the expression is outside the subset."""
    try:
        step = _Parser(expression, model).parse()
    except _Unsupported:
        return None

    def evaluate(value: Any) -> list[Any]:
        root: Node = (value, value.get("resourceType") if isinstance(value, dict) else None)
        return [data for data, _path in step([root])]
    return evaluate

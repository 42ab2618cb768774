"""A quick proof that the ``fhir.resources.R4B`` model accepts a resource, without building it.

``Validator`` (validation.py) checks a body twice: its own walk along the official
StructureDefinitions, then the R4B model (unknown elements, mandatory elements, primitive formats,
choice-type exclusivity). Building the model costs more than everything else a write checks: a
pydantic model per element, each with fhir_core's Python validators (about half a millisecond for
a CarePlan, two for a transaction's ten entries).

``ModelShapes.accepts`` answers the same question from the models' own metadata, read once per
class: every key is a field of the class, each primitive value passes the field's own annotation
(pydantic's ``TypeAdapter`` of it, so the formats are fhir_core's, not ours), complex values are
objects of the field's class, walked alike, mandatory fields are there, and at most one type of
each choice element. It answers True only where it is sure: anything it does not model (a
primitive's ``_element`` extension, a contained resource, a field name used instead of its JSON
name, a null, a class with validators of its own) is False, and the model is built as before.
False never rejects anything: the caller then asks the model, whose answer and messages are
unchanged. ``tests/fhir/test_model_shapes.py`` checks on the profiles' examples, synthetic
agreements and tens of thousands of variations that wherever this says True the model accepts.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase, FhirElementOrResourceBase
from pydantic import TypeAdapter, ValidationError

Check = Callable[[Any], bool]
_BASE_VALIDATORS = frozenset(FHIRAbstractModel.__pydantic_decorators__.model_validators)
# Primitive answers kept per annotation: codes, systems and references repeat across writes.
_CACHED_LENGTH = 200
_CACHE_SIZE = 4096


@dataclass(frozen=True)
class _Shape:
    fields: dict[str, tuple[bool, Check]]  # JSON name -> (repeats, check of one value)
    required: tuple[str, ...]  # JSON names that must have a value
    choices: tuple[tuple[tuple[str, ...], bool], ...]  # (JSON names of one choice element, mandatory)
    resource_type: str | None  # "resourceType" a resource's object carries


def _never(_value: Any) -> bool:
    return False


class ModelShapes:
    """What the R4B model classes accept, per class, built on first use."""

    def __init__(self) -> None:
        self._shapes: dict[type, _Shape | None] = {}
        self._primitives: dict[Any, Check] = {}

    def accepts(self, resource: dict[str, Any]) -> bool:
        """True only if ``get_fhir_model_class(type).model_validate(resource)`` would not raise."""
        type_name = resource.get("resourceType")
        if not isinstance(type_name, str) or not type_name.isalpha():
            return False
        try:
            model = get_fhir_model_class(type_name)
        except (KeyError, ValueError, AttributeError, ImportError):
            return False
        return self._object(resource, model, resource=True)

    def _object(self, node: Any, model: type, *, resource: bool = False) -> bool:
        if type(node) is not dict or not node:
            return False
        shape = self._shape(model)
        if shape is None:
            return False
        fields = shape.fields
        for key, value in node.items():
            field = fields.get(key)
            if field is None:
                if key == "resourceType" and resource and value == shape.resource_type:
                    continue
                return False
            many, check = field
            if many:
                if type(value) is not list or not value:
                    return False
                for item in value:
                    if not check(item):
                        return False
            elif not check(value):
                return False
        for name in shape.required:
            if node.get(name) is None:
                return False
        for names, mandatory in shape.choices:
            present = sum(1 for name in names if node.get(name) is not None)
            if present > 1 or (mandatory and not present):
                return False
        return True

    def _shape(self, model: type) -> _Shape | None:
        if model in self._shapes:
            return self._shapes[model]
        # None until built: a class that contains itself, or one another thread is building now,
        # is not proven (the model decides).
        self._shapes[model] = None
        shape = self._build(model)
        self._shapes[model] = shape
        return shape

    def _build(self, model: type) -> _Shape | None:
        if not issubclass(model, FHIRAbstractModel):
            return None
        decorators = model.__pydantic_decorators__
        if set(decorators.model_validators) - _BASE_VALIDATORS or decorators.field_validators:
            return None  # validators of its own (FHIRPrimitiveExtension): the model decides
        fields: dict[str, tuple[bool, Check]] = {}
        required: list[str] = []
        for name, info in model.model_fields.items():
            alias = info.alias or name
            if name.endswith("__ext") or name == "fhir_comments" or info.metadata:
                fields[alias] = (False, _never)
                continue
            fields[alias] = self._field(info.annotation)
            if info.is_required():
                required.append(alias)
        blank = model.model_construct()  # the two lists are methods of an instance; no validation
        for name, _ext in blank.get_required_fields():
            required.append(model.model_fields[name].alias or name)
        choices = []
        for names in blank.get_one_of_many_fields().values():
            extra = model.model_fields[names[0]].json_schema_extra or {}
            mandatory = isinstance(extra, dict) and extra.get("one_of_many_required") is True
            choices.append((tuple(model.model_fields[n].alias or n for n in names), mandatory))
        resource_type = model.get_resource_type() if model.has_resource_base() else None
        return _Shape(fields, tuple(dict.fromkeys(required)), tuple(choices), resource_type)

    def _field(self, annotation: Any) -> tuple[bool, Check]:
        annotation = _optional(annotation)
        many = typing.get_origin(annotation) is list
        if many:
            (annotation,) = typing.get_args(annotation)
            annotation = _optional(annotation)
        if annotation is None:
            return many, _never
        if isinstance(annotation, type) and issubclass(annotation, FhirBase):
            if issubclass(annotation, FhirElementOrResourceBase):
                return many, _never  # any resource (contained, Bundle.entry.resource): the model decides
            klass = annotation.get_model_klass()
            return many, lambda value: self._object(value, klass)
        if isinstance(annotation, type) and issubclass(annotation, FHIRAbstractModel):
            return many, _never
        return many, self._primitive(annotation)  # Annotated[str, Code()], bool, ...

    def _primitive(self, annotation: Any) -> Check:
        check = self._primitives.get(annotation)
        if check is None:
            try:
                check = _primitive_check(TypeAdapter(annotation))
            except Exception:  # noqa: BLE001 - a type pydantic cannot adapt alone: the model decides
                check = _never
            self._primitives[annotation] = check
        return check


def _primitive_check(adapter: TypeAdapter[Any]) -> Check:
    """Whether ``adapter`` takes a JSON value, remembered for short strings."""
    known: dict[str, bool] = {}

    def check(value: Any) -> bool:
        if value is None or type(value) in (dict, list):
            return False
        cacheable = type(value) is str and len(value) <= _CACHED_LENGTH
        if cacheable:
            answer = known.get(value)  # one look-up: another thread may clear it (writes run in threads)
            if answer is not None:
                return answer
        try:
            adapter.validate_python(value)
            answer = True
        except (ValidationError, ValueError, TypeError):
            answer = False
        if cacheable:
            if len(known) >= _CACHE_SIZE:
                known.clear()
            known[value] = answer
        return answer

    return check


def _optional(annotation: Any) -> Any:
    """``X`` of ``Optional[X]``; None for a union of several types."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else None
    return annotation

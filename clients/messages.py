"""Copying the fields two request messages share, by name, over their descriptors.

An ``ExplainRequest``, a ``WhatIfRequest`` or an ``OptimiseBatchRequest`` repeats fields of an
``OptimiseRequest`` (run, account, scenarios, models, program, options) under the same names;
:func:`copy_shared_fields` copies them, so a field added to both messages is copied with no
change here."""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf.message import Message

__all__ = ["copy_shared_fields"]

MessageT = TypeVar("MessageT", bound=Message)


def copy_shared_fields(source: Message, target: MessageT) -> MessageT:
    """Copy into ``target`` every field set in ``source`` that ``target`` has under the same
    name (a oneof's set member included; an unset field stays unset). Returns ``target``.
    Meant for a fresh ``target``: a proto3 scalar at its default is not "set" in ``source``,
    so it does not overwrite what ``target`` already holds.

    Raises
    ------
    TypeError
        A field of that name has another type (or cardinality) in ``target``.
    """
    fields = target.DESCRIPTOR.fields_by_name
    for field, value in source.ListFields():
        twin = fields.get(field.name)
        if twin is None:
            continue
        if _signature(twin) != _signature(field):
            raise TypeError(
                f"{field.name} is {_signature(field)} in {source.DESCRIPTOR.full_name} but "
                f"{_signature(twin)} in {target.DESCRIPTOR.full_name}"
            )
        if field.is_repeated:  # repeated fields and maps
            target.ClearField(field.name)
            getattr(target, field.name).MergeFrom(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
    return target


def _signature(field: Any) -> tuple[Any, ...]:
    """What must agree for a field (a ``FieldDescriptor``) to be copied: its type, its
    message or enum type, its cardinality; for a map, its key's and value's signatures (each
    message has a map entry type of its own name)."""
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        return "map", _signature(key), _signature(value)
    named = entry or field.enum_type
    return field.type, named.full_name if named is not None else "", field.is_repeated

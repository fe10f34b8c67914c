"""copy_shared_fields: the fields two messages share, copied by name over their descriptors."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from xmargin.clients import convert
from xmargin.clients.explain import explain_request
from xmargin.clients.messages import copy_shared_fields
from xmargin.clients.v1 import explain_pb2, service_pb2

FIELD = descriptor_pb2.FieldDescriptorProto


def _messages(extra: list[tuple[str, int, int]]) -> tuple[type[Message], type[Message]]:
    """Two made-up messages, Source and Target, sharing ``name`` and ``child``, with the
    fields ``extra`` (name, number, type) added to both: a field added to both messages."""
    file = descriptor_pb2.FileDescriptorProto(name="shared_test.proto", package="shared_test")
    file.message_type.add(name="Child").field.add(
        name="value", number=1, type=FIELD.TYPE_DOUBLE, label=FIELD.LABEL_OPTIONAL
    )
    for message_name, own in (("Source", "source_only"), ("Target", "target_only")):
        message = file.message_type.add(name=message_name)
        entry = message.nested_type.add(name="WeightsEntry")  # map<string, double> weights
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=FIELD.TYPE_STRING, label=FIELD.LABEL_OPTIONAL)
        entry.field.add(name="value", number=2, type=FIELD.TYPE_DOUBLE, label=FIELD.LABEL_OPTIONAL)
        message.field.add(name="weights", number=4, type=FIELD.TYPE_MESSAGE)
        message.field[-1].label = FIELD.LABEL_REPEATED
        message.field[-1].type_name = f".shared_test.{message_name}.WeightsEntry"
        message.field.add(name="name", number=1, type=FIELD.TYPE_STRING)
        message.field.add(name="child", number=2, type=FIELD.TYPE_MESSAGE)
        message.field[-1].type_name = ".shared_test.Child"
        message.field.add(name=own, number=3, type=FIELD.TYPE_INT64)
        for name, number, kind in extra:
            label = FIELD.LABEL_REPEATED if kind == FIELD.TYPE_DOUBLE else FIELD.LABEL_OPTIONAL
            message.field.add(name=name, number=number, type=kind, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("shared_test.Source")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("shared_test.Target")),
    )


def test_a_field_added_to_both_messages_is_copied() -> None:
    source_type, target_type = _messages(
        [("added_flag", 7, FIELD.TYPE_BOOL), ("added_values", 8, FIELD.TYPE_DOUBLE)]
    )
    source: Any = source_type(name="a", source_only=5, added_flag=True, added_values=[1.5, 2.5])
    source.child.value = 3.0
    source.weights["x"] = 0.25  # a map: each message has its own entry type
    target: Any = copy_shared_fields(source, target_type(target_only=9, added_values=[9.0]))
    assert target.name == "a" and target.child.value == 3.0
    assert dict(target.weights) == {"x": 0.25}
    assert target.added_flag is True
    assert list(target.added_values) == [1.5, 2.5]  # a copy: what target held is replaced
    assert target.target_only == 9  # its own fields are left as they were


def test_an_unset_field_stays_unset() -> None:
    source_type, target_type = _messages([])
    target: Any = copy_shared_fields(source_type(name="a"), target_type())
    assert not target.HasField("child")


def test_a_shared_name_of_another_type_is_refused() -> None:
    source_type, _ = _messages([("clash", 7, FIELD.TYPE_BOOL)])
    _, target_type = _messages([("clash", 7, FIELD.TYPE_STRING)])
    with pytest.raises(TypeError, match="clash"):
        copy_shared_fields(source_type(clash=True), target_type())


def _shared_names(a: Message, b: Message) -> set[str]:
    return set(a.DESCRIPTOR.fields_by_name) & set(b.DESCRIPTOR.fields_by_name)


@pytest.mark.parametrize(
    "target",
    [
        explain_pb2.ExplainRequest(),
        service_pb2.WhatIfRequest(),
        service_pb2.ComputeMarginRequest(),
        service_pb2.OptimiseBatchRequest(),
    ],
    ids=lambda m: m.DESCRIPTOR.name,
)
def test_every_field_an_optimise_request_shares_is_copied(
    target: Message, case_data: dict[str, Any]
) -> None:
    case = case_data
    source = convert.optimise_request(case, convert.run_context(case))
    source.warm_start.xm_quantity["X"] = 1.0
    copied = copy_shared_fields(source, target)
    shared = _shared_names(source, target)
    assert shared >= {"run", "scenario_set", "models", "program"}
    for name in shared:
        if source.DESCRIPTOR.fields_by_name[name].containing_oneof is None:
            assert getattr(copied, name) == getattr(source, name), name
    assert copied.WhichOneof("scenarios") == "scenario_set"


def test_the_explain_request_holds_the_optimise_request_and_current_only(
    case_data: dict[str, Any],
) -> None:
    case = case_data
    run = convert.run_context(case)
    request = explain_request(case, run, current_only=True, integral=False)
    optimise = convert.optimise_request(case, run, integral=False)
    for name in _shared_names(optimise, request):
        assert getattr(request, name) == getattr(optimise, name), name
    assert request.current_only is True
    assert request.options.continuous is True  # the option override reached it

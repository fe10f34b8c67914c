"""Health (Check, Watch, List) and server reflection (v1 and v1alpha).

grpcio-health-checking's servicer advertises ``Health/List`` but does not implement it, and
cannot close its Watch streams (they would hold a shutdown for the whole grace):
:class:`HealthServicer` adds both. grpcio-reflection serves only
``grpc.reflection.v1alpha``; ``grpc.reflection.v1`` (what buf curl and grpcurl try first) has
the same messages under another package, so :func:`enable_reflection` registers its
descriptor from v1alpha's and serves it with the same servicer.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

__all__ = ["REFLECTION_V1", "HealthServicer", "enable_reflection"]

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
_V1ALPHA = "grpc.reflection.v1alpha"
_V1 = "grpc.reflection.v1"


class HealthServicer(health.HealthServicer):
    """grpc_health's servicer with ``List`` and :meth:`close_watches`."""

    def List(  # noqa: N802 (gRPC method name)
        self, request: health_pb2.HealthListRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthListResponse:
        with self._lock:
            statuses = dict(self._server_status)
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in statuses.items()
            }
        )

    def close_watches(self) -> None:
        """End every Watch stream (after the last status it was sent), as at shutdown."""
        with self._lock:
            callbacks = [cb for group in self._send_response_callbacks.values() for cb in group]
        for send in callbacks:
            send(None)


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, made from v1alpha's descriptor."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = _V1
    proto.options.Clear()

    def rename(type_name: str) -> str:
        return type_name.replace(f".{_V1ALPHA}.", f".{_V1}.")

    for message in proto.message_type:
        for message_field in message.field:
            if message_field.type_name:
                message_field.type_name = rename(message_field.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type = rename(method.input_type)
            method.output_type = rename(method.output_type)
    return proto


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(REFLECTION_V1)
    except KeyError:
        pool.AddSerializedFile(_v1_file().SerializeToString())


def enable_reflection(service_names: tuple[str, ...], server: grpc.Server) -> None:
    """Serve reflection v1alpha and v1 for ``service_names`` (and both reflection services)."""
    _register_v1_descriptor()
    names = (*service_names, reflection.SERVICE_NAME, REFLECTION_V1)
    servicer: Any = reflection.ReflectionServicer(names)
    for service in (reflection.SERVICE_NAME, REFLECTION_V1):
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),)
        )

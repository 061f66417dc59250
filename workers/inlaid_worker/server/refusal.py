"""A refused request's kind on the wire (worker.proto RequestErrorKind): on the Session, RequestError.kind; on a unary
call (Prepare, Tokenize, Detokenize), the status code STATUS gives the kind, with the kind's proto name in the trailing
metadata ERROR_KIND_KEY. The gateway reads the kind, never the message (apps/gateway/src/common/inlaid-error.ts)."""

from __future__ import annotations

from typing import NoReturn

import grpc

from inlaid_worker.engine.error_kind import ErrorKind
from inlaid_worker.gen.inlaid.v1 import worker_pb2

ERROR_KIND_KEY = "inlaid-error-kind"

STATUS: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.BAD_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNKNOWN_MODEL: grpc.StatusCode.NOT_FOUND,
    ErrorKind.SHUTTING_DOWN: grpc.StatusCode.UNAVAILABLE,  # the gateway's Prepare tries another worker
    ErrorKind.OVERLOADED: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}


def proto_name(kind: ErrorKind) -> str:
    """The kind's RequestErrorKind value name, e.g. REQUEST_ERROR_KIND_BAD_INPUT."""
    return f"REQUEST_ERROR_KIND_{kind.name}"


def kind_to_proto(kind: ErrorKind) -> worker_pb2.RequestErrorKind:
    return worker_pb2.RequestErrorKind.Value(proto_name(kind))


def abort_with(context: grpc.ServicerContext, kind: ErrorKind, message: str) -> NoReturn:
    """Ends a unary call refusing its request: STATUS[kind], `message`, and the kind in the trailing metadata."""
    context.set_trailing_metadata(((ERROR_KIND_KEY, proto_name(kind)),))
    context.abort(STATUS[kind], message)

"""Why a request was refused or failed, stated where the error is raised (never read back from its message).

Each error a request can meet names its kind: RequestError at each raise (a required argument), the other request
errors as a class attribute (PromptError and SamplingError bad input, UnknownModelError an unknown model, ClosedError
a shutdown) or per instance (StructuredOutputError and AdmitError: each construction names its kind). The server sends the kind to the gateway (worker.proto RequestErrorKind: RequestError.kind
on the Session, trailing metadata on Prepare), which picks the client's HTTP / gRPC status from it alone.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """Only the name is ever read (refusal.proto_name: the proto value is REQUEST_ERROR_KIND_<name>); values are auto."""

    BAD_INPUT = enum.auto()  # the request's own fault (400)
    UNKNOWN_MODEL = enum.auto()  # the model is not served (404)
    SHUTTING_DOWN = enum.auto()  # the worker is stopping: retry elsewhere (503)
    OVERLOADED = enum.auto()  # too busy for it now, e.g. a resumed request's replay backlog: retry (503)
    INTERNAL = enum.auto()  # the worker's (or the gateway's) own failure (500, its text logged, not sent)


def declared_kind(exc: BaseException) -> ErrorKind | None:
    """The kind `exc` names (its `kind` attribute), None for an error no check foresaw."""
    kind = getattr(exc, "kind", None)
    return kind if isinstance(kind, ErrorKind) else None


def kind_of(exc: BaseException) -> ErrorKind:
    """The kind `exc` names; INTERNAL for one that names none (a bug, a failed thread start, a cancelled future)."""
    return declared_kind(exc) or ErrorKind.INTERNAL

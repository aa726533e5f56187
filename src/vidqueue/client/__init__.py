"""The Python SDK for vidqueue and GMI Cloud's request queue; it imports nothing of the server."""

from vidqueue.client.aio import AsyncClient
from vidqueue.client.errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    FieldDetail,
    NetworkError,
    NotFoundError,
    RateLimitError,
    RequestCancelled,
    RequestFailed,
    RequestNotFinished,
    ServerError,
    TimeoutError,
    ValidationError,
    VidqueueError,
)
from vidqueue.client.sync import Client
from vidqueue.client.types import (
    Delivery,
    MediaUrl,
    Model,
    Outcome,
    OutcomeError,
    Parameter,
    PriceInfo,
    Request,
    VideoInfo,
)

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "Delivery",
    "FieldDetail",
    "MediaUrl",
    "Model",
    "NetworkError",
    "NotFoundError",
    "Outcome",
    "OutcomeError",
    "Parameter",
    "PriceInfo",
    "RateLimitError",
    "Request",
    "RequestCancelled",
    "RequestFailed",
    "RequestNotFinished",
    "ServerError",
    "TimeoutError",
    "ValidationError",
    "VideoInfo",
    "VidqueueError",
]

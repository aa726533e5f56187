"""vidqueue: a GMI Cloud-compatible video-generation request queue, and its Python SDK.

``from vidqueue import Client`` is all a program needs to submit, wait for and download videos; the server's
own modules are imported only by ``vidqueue serve`` and ``vidqueue worker``.
"""

from vidqueue.client import (
    APIError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    FieldDetail,
    MediaUrl,
    Model,
    NetworkError,
    NotFoundError,
    Outcome,
    OutcomeError,
    Parameter,
    PriceInfo,
    RateLimitError,
    Request,
    RequestCancelled,
    RequestFailed,
    RequestNotFinished,
    ServerError,
    TimeoutError,
    ValidationError,
    VideoInfo,
    VidqueueError,
)

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
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
    "__version__",
]

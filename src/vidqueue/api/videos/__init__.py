"""The ``/v1/videos`` dialect (OpenAI's videos API, as open video servers share it) over the same queue.

router       the routes, mounted under PREFIX
openai_error the error shape of the /v1 paths
"""

from vidqueue.api.videos.errors import openai_error
from vidqueue.api.videos.routes import PREFIX, router

__all__ = ["PREFIX", "openai_error", "router"]

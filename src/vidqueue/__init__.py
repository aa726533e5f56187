"""vidqueue: a GMI Cloud-compatible video-generation request queue, and its Python SDK.

``from vidqueue import Client`` is all a program needs to submit, wait for and download videos; the server's
own modules are imported only by ``vidqueue serve`` and ``vidqueue worker``.
"""

from vidqueue import client as _client
from vidqueue.client import *  # noqa: F403 - the SDK's names are the package's names

__version__ = "0.1.0"

__all__ = ["__version__"]
__all__ += _client.__all__  # the form type checkers follow

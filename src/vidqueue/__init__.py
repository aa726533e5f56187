"""vidqueue: a GMI Cloud-compatible video-generation request queue."""

__version__ = "0.1.0"

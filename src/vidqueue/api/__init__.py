"""The HTTP edge: app factory, routes, auth, error mapping, media serving."""

from vidqueue.api.app import create_app

__all__ = ["create_app"]

"""HTTP fakes of the upstream providers (Kling, GMI Cloud) for integration tests."""

from tests.fakes.base import Fault
from tests.fakes.gmi import GmiFake
from tests.fakes.kling import KlingFake, kling_jwt

__all__ = ["Fault", "GmiFake", "KlingFake", "kling_jwt"]

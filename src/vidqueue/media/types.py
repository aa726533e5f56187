"""Values shared by the media modules: what a finished video is."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class VideoInfo:
    """Facts about an encoded video, read back from the file."""

    duration: float
    width: int
    height: int
    fps: int
    frames: int
    codec: str
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        """The outcome's ``video`` object."""
        return asdict(self)

"""Input images, video encoding and media storage."""

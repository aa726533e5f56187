"""Model definitions: parameters, defaults, limits, validation and schemas."""

"""Engines turn one claimed request into media."""

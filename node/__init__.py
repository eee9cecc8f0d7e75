"""Tidings node."""

"""Tidings cli."""

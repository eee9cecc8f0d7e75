"""Tidings storage."""

"""``tidings bridge ...``: bridges to other networks."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []

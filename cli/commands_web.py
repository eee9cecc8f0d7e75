"""``tidings open``: the local web page."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []

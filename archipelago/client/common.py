"""Kept only for archipelago/service/spread.py, which the issue-19 fast-path work owns and which
imports ``block_placement`` from here; its home is archipelago.wire. Delete this module once
spread.py imports it from there (tests/test_layers.py then flags the stale exception row)."""

from archipelago.wire import block_placement

__all__ = ["block_placement"]

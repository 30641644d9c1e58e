#!/usr/bin/env python3
"""The throwaway PostgreSQL's command line, kept here for scripts/test.sh: testbed/pg_cluster.py."""

import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "testbed" / "pg_cluster.py"
runpy.run_path(str(SCRIPT), run_name="__main__")

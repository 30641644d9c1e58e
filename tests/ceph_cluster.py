#!/usr/bin/env python3
"""The throwaway Ceph cluster's command line, kept here for scripts/test.sh: testbed/ceph_cluster.py."""

import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "testbed" / "ceph_cluster.py"
runpy.run_path(str(SCRIPT), run_name="__main__")

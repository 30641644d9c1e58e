"""`python -m control` is the same as `archip`."""

import sys

from control.cli import main

sys.exit(main())

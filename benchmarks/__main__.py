"""`python -m benchmarks [--quick|--full] [--out DIR] [--only NAMES]`: the whole suite."""

import sys

from benchmarks.suite import main

sys.exit(main())

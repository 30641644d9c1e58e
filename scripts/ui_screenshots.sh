#!/usr/bin/env bash
# Refresh the screenshots in docs/ui/ (docs/ui.md shows them): the web UI's browser tests
# take them in headless Chromium while they run their flows.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/ui
ARCHIPELAGO_UI_SCREENSHOTS="$PWD/docs/ui" .venv/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_ui_browser.py

#!/bin/bash
# README command (1): install, then start archipelago on its embedded default (file
# backend in the default instance directory) and show it working.
# ARCHIPELAGO_DATA_DIR (or the first argument) selects another instance directory.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh
if [ $# -gt 0 ]; then export ARCHIPELAGO_DATA_DIR="$1"; fi

archip=.venv/bin/archip
$archip --version
$archip config paths
$archip selftest

#!/usr/bin/env bash
# The main job from a fresh clone: install into .venv, then segment the shipped CT sample from three
# painted slices per organ, write masks and heatmaps to demo_out/ and print the Dice reached.
# With a display it then opens napari with the scan, support, prediction and heatmaps.
# Extra arguments go to `napari-fewshot demo` (e.g. --headless, --out DIR, --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
setup_env qt
exec .venv/bin/napari-fewshot demo "$@"

#!/usr/bin/env bash
# Everything the tests need, from a fresh clone on Debian: system libraries for a headless Qt/OpenGL
# napari viewer (Xvfb), a .venv with the package and its test extras, then the whole suite under Xvfb.
# Extra arguments go to pytest. Exits with pytest's status (non-zero on any failure or on no tests).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(xvfb xauth libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
              libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-shape0 libxcb-cursor0 libxcb-xfixes0
              libdbus-1-3 libgl1 libegl1 libfontconfig1 libglib2.0-0)
missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing system packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

source scripts/setup_env.sh
setup_env testing
exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest "$@"

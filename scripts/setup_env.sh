# Sourced by demo.sh and test.sh: create .venv (if missing) and install the package with the given extras.
# Usage: setup_env EXTRAS   (e.g. "qt" or "testing")
setup_env() {
    local extras="$1"
    local python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "napari-fewshot needs Python 3.10 or newer; set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "creating .venv with $("$python" --version)"
        "$python" -m venv .venv
    fi
    .venv/bin/python -m pip install --quiet --upgrade pip
    echo "installing napari-fewshot[$extras] and its dependencies into .venv (first time: a few minutes)"
    .venv/bin/python -m pip install --quiet --progress-bar off -e ".[$extras]"
}

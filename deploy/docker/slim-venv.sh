#!/bin/sh
# Drop what a runtime virtual environment never uses: the installers (pip, setuptools), the
# packages' own test suites and byte-code caches. The Dockerfile's builder stage and
# deploy/image-size.sh both run this, so the size measured is the size shipped. Without the
# caches the code is compiled in memory at start-up (~0.4 s here; the root filesystem is read-only).
set -eu
venv="${1:?usage: slim-venv.sh VENV}"
if "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    "$venv/bin/python" -m pip uninstall --quiet --yes pip setuptools wheel 2>/dev/null
fi
rm -f "$venv"/bin/pip "$venv"/bin/pip3 "$venv"/bin/pip3.*
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
find "$site" -type d \( -name tests -o -name __pycache__ \) -prune -exec rm -rf {} +

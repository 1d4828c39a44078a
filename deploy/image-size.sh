#!/bin/sh
# Estimate the runtime image's size where no Docker engine runs: install the project the way the
# Dockerfile's builder stage does (same files, same pip command, same slimming script) into a
# fresh venv, smoke-test it the same way, measure it, and add the base image's published size.
# Needs python3.11 (the image's Python: wheels are per version), strip (binutils) and access to
# the package index.
set -eu
cd "$(dirname "$0")/.."
root="$(pwd)"
PYTHON="${PYTHON:-python3.11}"
# python:3.11-slim, linux/amd64, as published (Docker Hub): compressed / unpacked.
BASE_GZ_MB=45
BASE_MB=130

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
cp -r pyproject.toml README.md service "$work/src/"   # the builder stage's COPY lines
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --no-cache-dir --only-binary=:all: "$work/src"
sh deploy/docker/slim-venv.sh "$work/venv"
(cd "$work" && "$work/venv/bin/python" "$root/deploy/docker/smoke.py" "$root/models") \
    >"$work/smoke.log" 2>&1 || { cat "$work/smoke.log" >&2; exit 1; }
tail -n 1 "$work/smoke.log"

mb() { awk "BEGIN { printf \"%.1f\", $1 / 1000000 }"; }
venv_bytes="$(du -sb "$work/venv" | cut -f1)"
venv_gz="$(tar -C "$work" -cf - venv | gzip -6 | wc -c)"
models_bytes="$(du -sb models | cut -f1)"
models_gz="$(tar -cf - models | gzip -6 | wc -c)"
echo "python:3.11-slim (published):   ${BASE_MB} MB unpacked, ${BASE_GZ_MB} MB compressed"
echo "/opt/venv (measured):           $(mb "$venv_bytes") MB unpacked, $(mb "$venv_gz") MB gzip"
echo "models/ (measured):             $(mb "$models_bytes") MB unpacked, $(mb "$models_gz") MB gzip"
echo "runtime image (estimate):       $(mb "$((BASE_MB * 1000000 + venv_bytes + models_bytes))") MB unpacked," \
    "$(mb "$((BASE_GZ_MB * 1000000 + venv_gz + models_gz))") MB compressed"
echo "largest packages (MB unpacked):"
site="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
du -sm "$site"/* | sort -rn | head -8 | sed "s#$site/#  #"

#!/bin/sh
# A Python 3.11 base image made from Debian bookworm's own packages, for machines that cannot
# pull python:3.11-slim (no registry reachable). Debian bookworm's Python is 3.11, the minor
# version of the official image, so the same wheels install. Build on it with
#   docker build --build-arg PYTHON_IMAGE=convscope-base:bookworm ...
# Usage: local-base.sh [NAME]   (default convscope-base:bookworm; an image already there is kept,
# REBUILD=1 makes it again). Needs root, debootstrap and a Debian mirror (DEBIAN_MIRROR).
set -eu
name="${1:-convscope-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if [ -z "${REBUILD:-}" ] && docker image inspect "$name" >/dev/null 2>&1; then
    echo "local-base.sh: $name is already there (REBUILD=1 to make it again)"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "local-base.sh: needs debootstrap" >&2; exit 1; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
# python-is-python3: `python` on PATH, as in the official image (the Dockerfile calls `python`).
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Later installs in images built on this one leave out what the official Debian images leave out.
cat >"$root/etc/dpkg/dpkg.cfg.d/excludes" <<'CFG'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
CFG
echo 'APT::Install-Recommends "false"; APT::Install-Suggests "false";' \
    >"$root/etc/apt/apt.conf.d/90no-recommends"
echo 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
    >"$root/etc/apt/apt.conf.d/90clean"
# Docs, manuals, translations, package lists and caches, logs: nothing a container reads.
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian \
    "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/var/log/* "$root"/debootstrap "$root"/tmp/* "$root"/root/.cache
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
# The name resolution and hostname files: Docker bind-mounts its own over these.
: >"$root/etc/hostname"
: >"$root/etc/resolv.conf"
tar -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$name" >/dev/null
python_version="$(docker run --rm --network none "$name" python --version)"
echo "local-base.sh: $name ($python_version, $(docker image inspect -f '{{.Size}}' "$name") bytes)"

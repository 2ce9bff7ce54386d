#!/usr/bin/env bash
# Build the default runner image, a Debian bookworm root file system with python3 in it, from
# Debian packages alone (no registry needed): debootstrap, then `docker import`. Idempotent: an
# image already tagged is left as it is. About 40 s on a fresh machine; needs root for
# debootstrap (and apt-get, when debootstrap is missing).
#
#   bash scripts/build-base-image.sh [TAG]      TAG defaults to triggerfish/python:3
#
# With access to a registry, `python:3.11-slim` serves as well (TRIGGERFISH_RUNNER_IMAGE).
set -euo pipefail

TAG=${1:-triggerfish/python:3}

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "build-base-image: $TAG is there already"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "build-base-image: $TAG is missing and building it (debootstrap) needs root" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# The Debian mirror this machine's apt uses, or the public one.
mirror=$(sed -n 's/^URIs:[[:space:]]*\(http[^[:space:]]*\/debian\)[[:space:]]*$/\1/p' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1 || true)
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^deb[[:space:]]\+\(http[^[:space:]]*\/debian\)[[:space:]].*/\1/p' \
        /etc/apt/sources.list 2>/dev/null | head -n 1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d /tmp/triggerfish-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "build-base-image: debootstrap bookworm from $mirror into $root"
debootstrap --variant=minbase --include=python3 bookworm "$root" "$mirror" >/dev/null
# What a replica never needs: documentation, locales, apt's caches.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
    "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
    -c 'ENV LANG=C.UTF-8' -c 'ENV PYTHONDONTWRITEBYTECODE=1' -c 'CMD ["python3"]' \
    - "$TAG" >/dev/null
echo "build-base-image: built $TAG ($(docker run --rm "$TAG" python3 --version))"

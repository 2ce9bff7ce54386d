#!/usr/bin/env bash
# Bring up what container replicas need, where it can be done: a Docker engine answering on
# its socket (as root: install docker.io if dockerd is missing, then start dockerd in the
# background, logging to $TRIGGERFISH_DOCKERD_LOG), then the base runner image
# (scripts/build-base-image.sh). Idempotent: what is there already is left alone.
# Exits non-zero, saying why, when it cannot; `make test` carries on and the Docker tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."

LOG=${TRIGGERFISH_DOCKERD_LOG:-/var/log/dockerd.log}
WAIT=${TRIGGERFISH_DOCKERD_WAIT:-60}

if docker info >/dev/null 2>&1; then
    echo "docker-up: a Docker engine answers"
else
    if [ "$(id -u)" != 0 ]; then
        echo "docker-up: no Docker engine answers, and starting one needs root" >&2
        exit 1
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        echo "docker-up: installing docker.io"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
    fi
    echo "docker-up: starting dockerd (log: $LOG)"
    mkdir -p "$(dirname "$LOG")"
    # Its own session, so that it outlives this script and a Ctrl-C in the terminal.
    setsid dockerd >>"$LOG" 2>&1 </dev/null &
    for _ in $(seq "$WAIT"); do
        if docker info >/dev/null 2>&1; then
            break
        fi
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "docker-up: dockerd did not answer within ${WAIT}s; the end of $LOG:" >&2
        tail -n 20 "$LOG" >&2 || true
        exit 1
    fi
    echo "docker-up: dockerd answers"
fi

bash scripts/build-base-image.sh

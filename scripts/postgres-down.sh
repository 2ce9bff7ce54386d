#!/usr/bin/env bash
# Stop the throwaway cluster that scripts/postgres-up.sh started in DIR, and remove DIR.
set -euo pipefail

DIR=${1:?usage: postgres-down.sh DIR}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$BIN" ] || BIN=$(dirname "$(command -v pg_ctl)")
if [ -f "$DIR/data/postmaster.pid" ]; then
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null || true
    else
        "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null || true
    fi
fi
rm -rf "$DIR"

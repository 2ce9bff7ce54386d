#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster in DIR (default: a new temporary folder), for the tests
# and benches of the PostgreSQL store: Debian's `postgresql` (installed first where missing, as
# root), `initdb` with password logins over TCP, `pg_ctl` on 127.0.0.1 at a free port, its
# socket in DIR. As root the server runs as the `postgres` user, which initdb requires.
# Prints the DSN as its last line (also in DIR/dsn). `scripts/postgres-down.sh DIR` stops it
# and removes DIR. Exits non-zero, saying why, when it cannot; the tests then skip.
set -euo pipefail

DIR=${1:-$(mktemp -d /tmp/triggerfish-pg.XXXXXX)}
PASSWORD=${TRIGGERFISH_PG_PASSWORD:-triggerfish-test}
say() { echo "postgres-up: $*" >&2; }

bindir() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$found" ] && [ -x "$found/initdb" ]; then
        echo "$found"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    fi
}

BIN=$(bindir)
if [ -z "$BIN" ]; then
    if [ "$(id -u)" != 0 ]; then
        say "PostgreSQL's server (initdb, pg_ctl) is not installed, and installing it needs root"
        exit 1
    fi
    say "installing Debian's postgresql"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    BIN=$(bindir)
    if [ -z "$BIN" ]; then
        say "postgresql is installed but no initdb was found under /usr/lib/postgresql"
        exit 1
    fi
fi

mkdir -p "$DIR"
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}
if [ "$(id -u)" = 0 ]; then
    chown postgres "$DIR"
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if [ ! -f "$DIR/data/PG_VERSION" ]; then
    printf '%s\n' "$PASSWORD" >"$DIR/pwfile"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR/pwfile"
    as_owner "$BIN/initdb" -D "$DIR/data" -U postgres --pwfile="$DIR/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 || {
        say "initdb failed; the end of $DIR/initdb.log:"
        tail -n 20 "$DIR/initdb.log" >&2
        exit 1
    }
    rm -f "$DIR/pwfile"
fi
# Settings for a throwaway server: no fsync (nothing here must outlive a power cut), a socket
# in its own folder, enough connections for several engines and their tests.
as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start -o \
    "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR -c fsync=off -c max_connections=200" \
    >/dev/null || {
    say "the server did not start; the end of $DIR/server.log:"
    tail -n 20 "$DIR/server.log" >&2
    exit 1
}
DSN="postgresql://postgres:$PASSWORD@127.0.0.1:$PORT/postgres"
echo "$DSN" >"$DIR/dsn"
say "a server answers at 127.0.0.1:$PORT (folder $DIR)"
echo "$DSN"

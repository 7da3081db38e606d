#!/usr/bin/env bash
# tests/pg/demo.sh - the pg_sop demo (`make demo`, which installs pg_sop first).
# Starts a temporary PostgreSQL 15 instance with pg_sop preloaded
# (tests/pg/pgtmp.sh), runs tests/pg/demo.sql in psql with every query echoed,
# then stops the instance and removes it, leaving nothing running. The SOP
# database lives in the instance's temporary folder. Exits non-zero if a step
# fails (psql -v ON_ERROR_STOP=1); the end of the server log is shown then.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/pg/pgtmp.sh
. "$HERE/pgtmp.sh"

echo "== Starting a temporary PostgreSQL 15 instance with shared_preload_libraries = 'pg_sop'"
pgtmp_start
echo "   $("$PG_BINDIR/postgres" --version), 127.0.0.1:$PGTMP_PORT, server user $PGTMP_USER, folder $PGTMP_DIR"
echo

if ! pgtmp_psql -e -v ON_ERROR_STOP=1 -P pager=off -v sopdb_path="$PGTMP_DIR/sopdb" -f "$HERE/demo.sql"; then
    echo >&2
    echo "demo: a step failed (its error is above); the end of the server log:" >&2
    tail -n 20 "$PGTMP_LOG" | sed 's/^/    /' >&2
    exit 1
fi

echo
echo "== Stopping the instance and removing $PGTMP_DIR"
pgtmp_cleanup
echo "demo: done"

#!/usr/bin/env bash
# tests/pg/run_tap.sh - the TAP tests of pg_sop (tests/pg/tap/t/*.pl, run by
# prove with PostgreSQL::Test::Cluster): the two-phase commit crash matrix.
# Needs pg_sop installed (make pg-install), libipc-run-perl and
# redis-server: a private one on a free 127.0.0.1 port serves the Redis half
# (SOP_TAP_REDIS_PORT) and is stopped at the end.
#
# initdb refuses root: as root, the tests run as the 'postgres' user from a
# copy in a temporary folder it owns. Prints prove's verbose output, then
# "# run_tap.sh: N passed, N failed" (one per TAP assertion). Exits non-zero
# if any failed. PG_SOP_KEEP=1 keeps the folder (tmp_check holds the logs).
set -uo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
PG_PERL=${PG_PERL:-/usr/lib/postgresql/15/lib/pgxs/src/test/perl}
SOP=${SOP_CLI:-$SRC/build/bin/sop}
# shellcheck source=tests/pg/pgtmp.sh
. "$HERE/pgtmp.sh"

bail() {
    echo "FAIL - run_tap.sh: $1"
    echo "# run_tap.sh: 0 passed, 1 failed"
    exit 1
}
[ -d "$PG_PERL/PostgreSQL/Test" ] || bail "$PG_PERL/PostgreSQL/Test is missing (postgresql-client-15)"
perl -MIPC::Run -e 1 2>/dev/null || bail "IPC::Run is missing: install libipc-run-perl (.ci/deps)"
[ -x "$SOP" ] || bail "$SOP is missing: make build/bin/sop"
command -v redis-server >/dev/null || bail "redis-server is missing (.ci/deps)"
user=$(pgtmp_user) || bail "no user to run PostgreSQL as"

work=$(mktemp -d /tmp/pg_sop_tap.XXXXXX)
rpid=
cleanup() {
    [ -n "$rpid" ] && kill "$rpid" 2>/dev/null && wait "$rpid" 2>/dev/null
    [ "${PG_SOP_KEEP:-}" = 1 ] && echo "# kept $work" || rm -rf "$work"
}
trap cleanup EXIT
rport=$(pgtmp_free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
rpid=$!
for _ in $(seq 50); do
    redis-cli -p "$rport" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
done
cp -r "$HERE/tap/t" "$work/t"
cp "$SOP" "$work/sop"
[ "$(id -u)" -eq 0 ] && chown -R "$user" "$work"
log=$work/prove.log
pgtmp_as env PATH="$PG_BINDIR:$PATH" PERL5LIB="$PG_PERL" SOP_CLI="$work/sop" \
    SOP_TAP_REDIS_PORT="$rport" \
    PG_REGRESS=/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress bash -c "cd '$work' && prove -v t/*.pl" >"$log" 2>&1
status=$?
cat "$log"
passed=$(grep -cE '^ok [0-9]+' "$log")
failed=$(grep -cE '^not ok [0-9]+' "$log")
if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
    echo "FAIL - run_tap.sh: no test ran"
    failed=1
elif [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "FAIL - run_tap.sh: prove exited with status $status"
    failed=1
fi
echo "# run_tap.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

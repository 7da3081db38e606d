#!/usr/bin/env bash
# tests/pg/run_regress.sh [TEST...] - the PostgreSQL suites of pg_sop:
#   pg_regress            sql/NAME.sql against expected/NAME.out
#   pg_isolation_regress  tests/pg/isolation/specs/NAME.spec against
#                         tests/pg/isolation/expected/NAME.out
# each on its own temporary instance (--temp-instance) configured with
# shared_preload_libraries = 'pg_sop' and max_prepared_transactions = 10,
# created with --no-locale --encoding=UTF8 (so the database collation is "C").
# Runs every test (in sorted order) or only the TESTs named. pg_sop must be
# installed first (make pg-install; make pg-test does both).
#
# Prints "ok - NAME" or "FAIL - NAME" per test (isolation tests as
# isolation/NAME) and ends with "# run_regress.sh: N passed, N failed", the
# line tests/run reads; on a failure also the start of regression.diffs (or
# the server log when the instance did not come up). Exits non-zero if any
# test failed.
#
# initdb refuses root: as root, the suites run as the 'postgres' user from a
# copy of the tests in a temporary folder it owns. Tests that need a SOP
# database folder use paths under /tmp/pg_sop_regress, which this script
# empties and gives to the server's user (mode 0700) before each suite; its
# path is also exported as PG_SOP_REGRESS_DIR (psql: \getenv). Concurrent
# runs wait for each other (flock on /tmp/pg_sop_regress.lock).
#
# Environment: PG_BINDIR (default /usr/lib/postgresql/15/bin),
# PG_SOP_TEST_ROOT (the folder holding sql/, expected/ and
# tests/pg/isolation/; default this repository), PG_SOP_KEEP=1 (keep the
# outputs and /tmp/pg_sop_regress, and print where they are).
set -uo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${PG_SOP_TEST_ROOT:-$(cd "$HERE/../.." && pwd)}
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
SOPDIR=/tmp/pg_sop_regress
export PG_SOP_REGRESS_DIR=$SOPDIR
# shellcheck source=tests/pg/pgtmp.sh
. "$HERE/pgtmp.sh"

passed=0 failed=0
ok() {
    echo "ok - $1"
    passed=$((passed + 1))
}
fail() {
    echo "FAIL - $1${2:+: $2}"
    failed=$((failed + 1))
}
summary() {
    echo "# run_regress.sh: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
# bail WHY: a failure that stops the run before any test.
bail() {
    fail "run_regress.sh" "$1"
    summary
    exit 1
}

# --- what is needed --------------------------------------------------------
[ -x "$PG_BINDIR/pg_config" ] || bail "$PG_BINDIR/pg_config is missing: install postgresql-15 (.ci/deps)"
PGXS_TEST="$("$PG_BINDIR/pg_config" --pkglibdir)/pgxs/src/test"
PG_REGRESS=$PGXS_TEST/regress/pg_regress
PG_ISOLATION_REGRESS=$PGXS_TEST/isolation/pg_isolation_regress
[ -x "$PG_REGRESS" ] || bail "$PG_REGRESS is missing: install postgresql-client-15 (.ci/deps)"
[ -x "$PG_BINDIR/initdb" ] || bail "$PG_BINDIR/initdb is missing: install postgresql-15 (.ci/deps)"
so="$("$PG_BINDIR/pg_config" --pkglibdir)/pg_sop.so"
control="$("$PG_BINDIR/pg_config" --sharedir)/extension/pg_sop.control"
[ -f "$so" ] || bail "$so is missing: pg_sop is not installed (make pg-install)"
[ -f "$control" ] || bail "$control is missing: pg_sop is not installed (make pg-install)"
if [ "$(id -u)" -eq 0 ]; then
    id -u postgres >/dev/null 2>&1 || bail "running as root needs the 'postgres' user: install postgresql-15 (.ci/deps)"
fi

# --- which tests ------------------------------------------------------------
regress=() isolation=()
for f in "$SRC"/sql/*.sql; do
    [ -f "$f" ] && regress+=("$(basename "$f" .sql)")
done
for f in "$SRC"/tests/pg/isolation/specs/*.spec; do
    [ -f "$f" ] && isolation+=("$(basename "$f" .spec)")
done
if [ $# -gt 0 ]; then
    all_regress=("${regress[@]}") all_isolation=("${isolation[@]}")
    regress=() isolation=()
    for t in "$@"; do
        t=${t#isolation/}
        found=0
        for r in "${all_regress[@]}"; do [ "$r" = "$t" ] && regress+=("$t") && found=1; done
        for r in "${all_isolation[@]}"; do [ "$r" = "$t" ] && isolation+=("$t") && found=1; done
        [ $found -eq 1 ] || fail "$t" "no sql/$t.sql nor tests/pg/isolation/specs/$t.spec"
    done
fi
[ $((${#regress[@]} + ${#isolation[@]})) -gt 0 ] ||
    bail "no tests to run: $SRC/sql has no .sql files and $SRC/tests/pg/isolation/specs no .spec files"

# --- a private copy, readable by the server's user -------------------------
T=$(pgtmp_mktemp) || bail "cannot create a temporary folder"
locked=0
cleanup() {
    local d
    for d in "$T"/inst*/data; do
        [ -f "$d/postmaster.pid" ] || continue
        pgtmp_as "$PG_BINDIR/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
    done
    if [ "${PG_SOP_KEEP:-0}" = 1 ]; then
        rm -rf "$T"/inst*
        echo "# kept $T and $SOPDIR" >&8
    else
        rm -rf "$T"
        [ "$locked" -eq 0 ] || rm -rf "$SOPDIR" 2>/dev/null
    fi
}
# (a trap may run while a command's output is redirected: say it on fd 8, the
# script's own stdout)
exec 8>&1
trap cleanup EXIT
trap 'echo "# run_regress.sh: interrupted" >&8; exit 130' INT
trap 'echo "# run_regress.sh: terminated" >&8; exit 143' TERM

mkdir -p "$T/regress/sql" "$T/regress/expected" "$T/iso/specs" "$T/iso/expected"
for t in "${regress[@]}"; do
    cp "$SRC/sql/$t.sql" "$T/regress/sql/"
    # a missing expected file would stop pg_regress: compare with an empty one
    # instead, so the diff shows the whole output
    cp "$SRC/expected/$t.out" "$T/regress/expected/" 2>/dev/null || : >"$T/regress/expected/$t.out"
    # alternative expected outputs (NAME_1.out, ...)
    cp "$SRC/expected/${t}"_[0-9].out "$T/regress/expected/" 2>/dev/null
done
for t in "${isolation[@]}"; do
    cp "$SRC/tests/pg/isolation/specs/$t.spec" "$T/iso/specs/"
    cp "$SRC/tests/pg/isolation/expected/$t.out" "$T/iso/expected/" 2>/dev/null ||
        : >"$T/iso/expected/$t.out"
    cp "$SRC/tests/pg/isolation/expected/${t}"_[0-9].out "$T/iso/expected/" 2>/dev/null
done
cat >"$T/temp.conf" <<'EOF'
# tests/pg/run_regress.sh
shared_preload_libraries = 'pg_sop'
max_prepared_transactions = 10
EOF
[ "$(id -u)" -ne 0 ] || chown -R postgres: "$T"

# The fixed folder the tests keep SOP databases in; one run at a time.
lock=$SOPDIR.lock
[ -e "$lock" ] || : >"$lock" 2>/dev/null
exec 9<"$lock" || bail "cannot open $lock"
if ! flock -n 9; then
    echo "# waiting for another run_regress.sh to finish with $SOPDIR"
    flock 9 || bail "cannot lock $lock"
fi
locked=1
fresh_sopdir() {
    rm -rf "$SOPDIR" || bail "cannot remove $SOPDIR (left by another user?)"
    mkdir -m 0700 "$SOPDIR" || bail "cannot create $SOPDIR"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$SOPDIR" || bail "cannot give $SOPDIR to postgres"
}

# run_suite KIND PROGRAM INPUTDIR TESTS...: runs one suite and reports each test.
run_suite() {
    local kind=$1 prog=$2 input=$3
    shift 3
    local out=$T/out-$kind inst=$T/inst-$kind log=$T/$kind.log port st t line prefix=''
    [ "$kind" = regress ] || prefix="$kind/"
    port=$(pgtmp_free_port) || bail "found no free TCP port"
    fresh_sopdir
    echo "# $kind: $# test(s) on a temporary instance, port $port"
    pgtmp_as "$prog" --bindir="$PG_BINDIR" --temp-instance="$inst" --temp-config="$T/temp.conf" \
        --inputdir="$input" --outputdir="$out" --port="$port" \
        --encoding=UTF8 --no-locale "$@" >"$log" 2>&1
    st=$?
    local nfail=$failed
    for t in "$@"; do
        [ -s "$input/expected/$t.out" ] ||
            echo "# $prefix$t: no expected output yet (the diff below is its whole output)"
        # PostgreSQL 15: "test NAME ... ok    12 ms" / "... FAILED ..." / "... failed (ignored)"
        line=$(grep -E "^(test )? *$t +\.\.\. " "$log" | tail -n 1)
        case $line in
        *"... ok"*) ok "$prefix$t" ;;
        *"... failed (ignored)"*) ok "$prefix$t (failure ignored)" ;;
        *"... FAILED"*)
            line=$(sed -E 's/.*\.\.\. FAILED *//; s/ *[0-9]+ ms$//' <<<"$line")
            fail "$prefix$t" "${line:-output differs from the expected file}"
            ;;
        *) fail "$prefix$t" "did not run" ;;
        esac
    done
    if [ "$st" -ne 0 ] && [ "$failed" -eq "$nfail" ]; then
        fail "$kind" "$(basename "$prog") exited with status $st"
    fi
    [ "$failed" -ne "$nfail" ] || return 0
    echo "# ---- $(basename "$prog") output"
    sed 's/^/# /' "$log"
    if [ -s "$out/regression.diffs" ]; then
        echo "# ---- $out/regression.diffs (first 200 lines)"
        head -n 200 "$out/regression.diffs"
    else
        for f in "$out/log/initdb.log" "$out/log/postmaster.log"; do
            [ -s "$f" ] || continue
            echo "# ---- $f (last 40 lines)"
            tail -n 40 "$f" | sed 's/^/# /'
        done
    fi
}

[ ${#regress[@]} -eq 0 ] || run_suite regress "$PG_REGRESS" "$T/regress" "${regress[@]}"
if [ ${#isolation[@]} -gt 0 ]; then
    if [ -x "$PG_ISOLATION_REGRESS" ]; then
        run_suite isolation "$PG_ISOLATION_REGRESS" "$T/iso" "${isolation[@]}"
    else
        fail "isolation" "$PG_ISOLATION_REGRESS is missing: install postgresql-client-15 (.ci/deps)"
    fi
fi
summary

#!/usr/bin/env bash
# tests/pg/test_interop.sh - the same SOP database through SQL and through
# the `sop` tool (docs/pg_sop.md, "Type mapping"): rows written by SQL are
# listed by `sop scan` and pass `sop check`; a raw store made and filled by
# `sop` reads in SQL as (key bytea, value bytea) and takes SQL writes that
# `sop get` returns. Needs pg_sop installed (make pg-install).
#
# Usage: SOP_CLI=path/to/sop tests/pg/test_interop.sh
# Ends with "# test_interop.sh: N passed, N failed".
set -u
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
SOP=${SOP_CLI:-build/bin/sop}
case $SOP in /*) ;; *) SOP=$PWD/$SOP ;; esac
# shellcheck source=tests/pg/pgtmp.sh
. "$HERE/pgtmp.sh"
passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
fail() { echo "FAIL - $1: $2"; failed=$((failed + 1)); }
check() { # check DESC WANT GOT
    if [ "$2" = "$3" ]; then ok "$1"; else fail "$1" "wanted '$2', got '$3'"; fi
}
finish() {
    echo "# test_interop.sh: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}
pgtmp_start >/dev/null || { fail "start a PostgreSQL instance" "see above"; finish; }
DB=$PGTMP_DIR/sopdb
# `sop` runs as the server's user too: the folder is the server's
sop() { pgtmp_as "$SOP" "$@"; }
q() { pgtmp_psql -X -At -v ON_ERROR_STOP=1 -c "$1" 2>&1; }

q "CREATE EXTENSION pg_sop" >/dev/null
q "CREATE SERVER s FOREIGN DATA WRAPPER pg_sop OPTIONS (path '$DB')" >/dev/null
q "CREATE FOREIGN TABLE people (id int OPTIONS (key 'true'), name text) SERVER s OPTIONS (create_if_missing 'true')" >/dev/null
q "INSERT INTO people SELECT g, 'p' || g FROM generate_series(1, 50) g" >/dev/null
check "SQL rows are in the store" "50" "$(sop stores "$DB" 2>&1 | awk -F '\t' '$1 == "people" { print $2 }')"
check "sop scan lists SQL rows" "p1 p2" "$(sop scan "$DB" people --limit 2 2>&1 | grep -ao 'p[0-9]*' | tr '\n' ' ' | sed 's/ $//')"
check "sop check is clean after SQL writes" "0" "$(sop check "$DB" >/dev/null 2>&1; echo $?)"

sop create "$DB" raw >/dev/null 2>&1
sop put "$DB" raw alpha one >/dev/null 2>&1
sop put "$DB" raw beta two >/dev/null 2>&1
q "CREATE FOREIGN TABLE raw (key bytea OPTIONS (key 'true'), value bytea) SERVER s" >/dev/null
check "a raw store reads in SQL" "alpha=one,beta=two" \
    "$(q "SELECT string_agg(convert_from(key, 'UTF8') || '=' || convert_from(value, 'UTF8'), ',' ORDER BY key) FROM raw")"
q "INSERT INTO raw VALUES ('gamma', 'three')" >/dev/null
check "an SQL write to a raw store reads with sop get" "three" "$(sop get "$DB" raw gamma 2>&1)"
q "UPDATE raw SET value = 'ONE' WHERE key = 'alpha'" >/dev/null
check "an SQL update reads with sop get" "ONE" "$(sop get "$DB" raw alpha 2>&1)"
check "a raw store with other columns is refused" "1" \
    "$(q "CREATE FOREIGN TABLE raw2 (key bytea OPTIONS (key 'true'), n int) SERVER s OPTIONS (store 'raw')" >/dev/null; q "SELECT * FROM raw2" | grep -c 'plain byte keys')"
check "sop check is clean at the end" "0" "$(sop check "$DB" >/dev/null 2>&1; echo $?)"
finish

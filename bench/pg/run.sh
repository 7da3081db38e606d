#!/usr/bin/env bash
# bench/pg/run.sh - the PostgreSQL part of `make bench`: a pg_sop foreign table
# against an ordinary heap table with a primary key, on one temporary
# PostgreSQL 15 instance (tests/pg/pgtmp.sh, as tests/pg/demo.sh uses it).
#
# What it measures, per repetition r (BENCH_REPS, default 3) over BENCH_N rows
# (default 1000000) of (id bigint, v text of 100 characters):
#   pg-insert  BENCH_N rows, 1000 per transaction: pgbench -n -c 1 -j 1
#              -t BENCH_N/1000, each transaction takes its batch number from a
#              sequence and inserts ids (b-1)*1000+1 .. b*1000 with
#              INSERT ... SELECT generate_series. rows/s = tps * 1000. Fresh
#              tables per rep: kv_heap_rR (PRIMARY KEY) and kv_sop_rR (store
#              kv_rR, slot_length 500). A CHECKPOINT runs before each table's
#              load, so neither pays for the other's dirty buffers; after its
#              load each table is settled, untimed: VACUUM ANALYZE (heap,
#              whose autovacuum is off so that it cannot rewrite the heap
#              during pg_sop's load or the reads) / ANALYZE (pg_sop).
#   pg-lookup  BENCH_N point lookups: table probe holds 1..BENCH_N shuffled
#              (setseed), and SELECT count(*), sum(length(t.v)) FROM probe p
#              JOIN tbl t ON t.id = p.id runs with hash and merge joins off: a
#              nested loop of index scans (heap) / parameterized foreign scans,
#              i.e. B-tree seeks (pg_sop). One untimed warm-up run in the same
#              session, then one timed run; the count must be BENCH_N.
#              (BENCH_PG_WARMUP=scan: the warm-up is one ordered scan instead,
#              which touches every row too but takes a tenth of the time.)
#   pg-scan    one full ordered scan: SELECT count(*), sum(length(v)) FROM
#              (SELECT id, v FROM tbl ORDER BY id) s, the planner choosing the
#              plan; warm-up run first (same session), count checked.
#   pg-range   10,000 queries of 100 rows from random starts: pgbench -t 10000
#              with \set s random(1, :n - 99) and SELECT count(*),
#              sum(length(v)) FROM (SELECT v FROM tbl WHERE id >= :s ORDER BY
#              id LIMIT 100) r, the same --random-seed for both tables (so the
#              same starts). rows/s = tps * 100.
# The lookup and scan are timed server-side (clock_timestamp() before and after
# the statement, in the same session) for both tables. Per test the heap table
# runs first, then pg_sop, on the same warm instance (everything fits in the
# page cache; the server keeps pgtmp's settings: PostgreSQL's defaults -
# shared_buffers 128MB - and fsync = on). Every session (psql and pgbench,
# through PGOPTIONS) has max_parallel_workers_per_gather = 0: pg_sop is not
# parallel safe, and on 2 cores a parallel heap plan only adds noise.
#
# pgbench runs with -M prepared. The range test uses -M simple for both tables
# instead if the generic plan of the range query on pg_sop (what -M prepared
# runs after five executions; EXPLAIN EXECUTE under plan_cache_mode =
# force_generic_plan, on rep 1's loaded table) loses the key condition.
# BENCH_PG_MODE=prepared|simple forces one mode for every pgbench run.
# The range test's pgbench connection is a new backend, so pg_sop's per-process
# node cache starts empty there; measured: the first and the second 10,000
# queries of one connection take the same time (the store's files are in the
# page cache either way).
#
# Output: CSV lines appended to BENCH_CSV (default build/bench/raw.csv; the
# header is written only when the file is missing or empty):
#   rep,config,workload,ops,secs,ops_per_s,capped,setup_s,wbytes_per_op,rbytes_per_op,p50_us,p99_us,retries,note
# config pg-heap|pg-sop; workload pg-insert|pg-lookup|pg-scan|pg-range; ops =
# rows; capped 0; setup_s..retries empty. The EXPLAIN (COSTS OFF) plans of
# each read query, once per table, and the tables' sizes go to BENCH_PG_PLANS
# (default build/bench/pg_plans.txt, rewritten). Progress lines go to stderr.
#
# Run from anywhere after `make pg-install` (as root the server runs as the
# postgres user). The instance and its SOP database are removed at exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/pg/pgtmp.sh
. "$REPO/tests/pg/pgtmp.sh"

BENCH_N=${BENCH_N:-1000000}
BENCH_REPS=${BENCH_REPS:-3}
BENCH_CSV=${BENCH_CSV:-$REPO/build/bench/raw.csv}
BENCH_PG_PLANS=${BENCH_PG_PLANS:-$REPO/build/bench/pg_plans.txt}
BENCH_PG_MODE=${BENCH_PG_MODE:-}
BENCH_PG_WARMUP=${BENCH_PG_WARMUP:-full}
INSERT_MODE=${BENCH_PG_MODE:-prepared}
RANGE_MODE=''
RANGE_TXNS=10000
RANGE_ROWS=100
RANGE_SEED=42
PROBE_SEED=0.42

die() {
    echo "pg: $*" >&2
    exit 1
}
say() { echo "pg: $*" >&2; }

if ! [[ $BENCH_N =~ ^[1-9][0-9]*000$ ]]; then
    die "BENCH_N must be a positive multiple of 1000 (got '$BENCH_N')"
fi
if ! [[ $BENCH_REPS =~ ^[1-9][0-9]*$ ]]; then
    die "BENCH_REPS must be a positive integer (got '$BENCH_REPS')"
fi
case $BENCH_PG_MODE in '' | prepared | simple) ;; *) die "BENCH_PG_MODE must be prepared or simple" ;; esac
case $BENCH_PG_WARMUP in full | scan) ;; *) die "BENCH_PG_WARMUP must be full or scan" ;; esac
[ -x "$PG_BINDIR/pgbench" ] || die "$PG_BINDIR/pgbench is missing: install postgresql-15"
mkdir -p "$(dirname "$BENCH_CSV")" "$(dirname "$BENCH_PG_PLANS")"
[ -s "$BENCH_CSV" ] ||
    echo "rep,config,workload,ops,secs,ops_per_s,capped,setup_s,wbytes_per_op,rbytes_per_op,p50_us,p99_us,retries,note" >"$BENCH_CSV"

T_START=$(date +%s.%N)
export PGOPTIONS="-c max_parallel_workers_per_gather=0"

pgtmp_start
say "PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGTMP_PORT ($PGTMP_DIR), N=$BENCH_N, reps=$BENCH_REPS"
WORK=$PGTMP_DIR/bench # pgbench scripts (removed with the instance)
mkdir -p "$WORK"

# Q ARGS...: psql, quiet, unaligned, stop on the first error.
Q() { pgtmp_psql -q -At -v ON_ERROR_STOP=1 "$@"; }

# PGB MODE ARGS...: pgbench on the instance, one client, query mode MODE.
PGB() {
    local mode=$1
    shift
    "$PG_BINDIR/pgbench" -h "$PGTMP_DIR" -p "$PGTMP_PORT" -U "$PGTMP_USER" -n -M "$mode" -c 1 -j 1 "$@" postgres
}

# csv REP CONFIG WORKLOAD OPS SECS NOTE: one result line, and the progress line.
csv() {
    local ops_s
    ops_s=$(awk -v o="$4" -v s="$5" 'BEGIN { printf "%.1f", o / s }')
    printf '%s,%s,%s,%s,%s,%s,0,,,,,,,%s\n' "$1" "$2" "$3" "$4" "$5" "$ops_s" "${6//,/;}" >>"$BENCH_CSV"
    say "rep $1 $2 $3 $(printf '%.2f' "$5") s, $ops_s rows/s${6:+ ($6)}"
}

# pgb_run OUT MODE ARGS...: runs pgbench, keeps its output in OUT, checks that
# every transaction ran, prints the tps (without initial connection time).
pgb_run() {
    local out=$1 t tps
    shift
    if ! PGB "$@" >"$out" 2>&1; then
        cat "$out" >&2
        die "pgbench failed (output above)"
    fi
    t=$(awk '/^number of transactions actually processed:/ { print $NF }' "$out")
    tps=$(awk '/^tps = .*without initial connection time/ { print $3 }' "$out")
    if [ -z "$tps" ] || [ -z "$t" ] || [ "${t%/*}" != "${t#*/}" ] ||
        grep -q '^number of failed transactions: [1-9]' "$out"; then
        cat "$out" >&2
        die "pgbench did not run every transaction (output above)"
    fi
    echo "$tps"
}

# plan TITLE SQL...: appends TITLE and the EXPLAIN (COSTS OFF) output of the
# last statement of SQL (the ones before it are settings) to BENCH_PG_PLANS.
plan() {
    local title=$1
    shift
    { echo "== $title"; Q -c "$*" | sed 's/^/    /'; echo; } >>"$BENCH_PG_PLANS"
}

# --- setup -----------------------------------------------------------------
Q -v n="$BENCH_N" -v sopdb_path="$PGTMP_DIR/sopdb" -v seed="$PROBE_SEED" <<'SQL'
CREATE EXTENSION pg_sop;
CREATE SERVER sopdb FOREIGN DATA WRAPPER pg_sop OPTIONS (path :'sopdb_path');
CREATE SEQUENCE batch_seq;
SELECT setseed(:seed) \g /dev/null
CREATE TABLE probe AS SELECT id::bigint AS id FROM generate_series(1, :n) id ORDER BY random();
VACUUM ANALYZE probe;
SQL
[ "$(Q -c 'SHOW max_parallel_workers_per_gather')" = 0 ] || die "max_parallel_workers_per_gather is not 0 in the sessions"

cat >"$WORK/insert.in" <<'EOF'
SELECT nextval('batch_seq') AS b \gset
INSERT INTO @TBL@ (id, v) SELECT g, substr(repeat(md5(g::text), 4), 1, 100) FROM generate_series((:b - 1) * 1000 + 1, :b * 1000) AS g;
EOF
cat >"$WORK/range.in" <<'EOF'
\set s random(1, :n - 99)
SELECT count(*), sum(length(v)) FROM (SELECT v FROM @TBL@ WHERE id >= :s ORDER BY id LIMIT 100) r;
EOF

LOOKUP_SQL='SELECT count(*), sum(length(t.v)) FROM probe p JOIN @TBL@ t ON t.id = p.id'
SCAN_SQL='SELECT count(*), sum(length(v)) FROM (SELECT id, v FROM @TBL@ ORDER BY id) s'
# shellcheck disable=SC2016 # $1: the parameter of the prepared statement
RANGE_SQL='SELECT count(*), sum(length(v)) FROM (SELECT v FROM @TBL@ WHERE id >= $1 ORDER BY id LIMIT 100) r'
NOJOIN='SET enable_hashjoin = off; SET enable_mergejoin = off;'

{
    echo "# bench/pg/run.sh plans, $(date -u +%FT%TZ), N=$BENCH_N, $("$PG_BINDIR/postgres" --version)"
    echo "# every session: max_parallel_workers_per_gather = 0; lookups also: enable_hashjoin = off, enable_mergejoin = off"
    echo
} >"$BENCH_PG_PLANS"

# --- one repetition ----------------------------------------------------------
# create_tables R: the fresh pair of tables of repetition R.
create_tables() {
    Q <<SQL
CREATE TABLE kv_heap_r$1 (id bigint PRIMARY KEY, v text NOT NULL) WITH (autovacuum_enabled = off);
CREATE FOREIGN TABLE kv_sop_r$1 (id bigint OPTIONS (key 'true'), v text NOT NULL)
  SERVER sopdb OPTIONS (store 'kv_r$1', create_if_missing 'true', slot_length '500');
SQL
}

# t_insert R CONFIG TABLE
t_insert() {
    local tps secs
    sed "s/@TBL@/$3/" "$WORK/insert.in" >"$WORK/insert_$3.pgb"
    Q -c 'ALTER SEQUENCE batch_seq RESTART' -c 'CHECKPOINT'
    tps=$(pgb_run "$WORK/insert_$3.out" "$INSERT_MODE" -t $((BENCH_N / 1000)) -f "$WORK/insert_$3.pgb")
    [ "$(Q -c "SELECT count(*) FROM $3")" = "$BENCH_N" ] || die "$3 does not hold $BENCH_N rows after the load"
    secs=$(awk -v t=$((BENCH_N / 1000)) -v tps="$tps" 'BEGIN { printf "%.6f", t / tps }')
    csv "$1" "$2" pg-insert "$BENCH_N" "$secs" "pgbench -M $INSERT_MODE; 1000 rows/txn"
    # settle, untimed, before anything else runs: VACUUM (the visibility map,
    # hint bits) so no autovacuum rewrites the heap during the next load or the
    # reads, ANALYZE for the planner (pg_sop: samples the store)
    case $2 in
    pg-heap) Q -c "VACUUM ANALYZE $3" ;;
    *) Q -c "ANALYZE $3" ;;
    esac
}

# t_reads R CONFIG TABLE: lookups then the ordered scan, one session (each
# preceded by an untimed warm-up run).
t_reads() {
    local lookup scan lookup_warm out cnt sum secs warm
    lookup=${LOOKUP_SQL//@TBL@/$3}
    scan=${SCAN_SQL//@TBL@/$3}
    lookup_warm=$lookup
    [ "$BENCH_PG_WARMUP" = full ] || lookup_warm=$scan
    out=$(Q <<SQL
$NOJOIN
SELECT clock_timestamp() AS t0 \gset
$lookup_warm \g /dev/null
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) AS lw_secs \gset
SELECT clock_timestamp() AS t0 \gset
$lookup \gset l_
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) AS l_secs \gset
RESET enable_hashjoin; RESET enable_mergejoin;
SELECT clock_timestamp() AS t0 \gset
$scan \g /dev/null
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) AS sw_secs \gset
SELECT clock_timestamp() AS t0 \gset
$scan \gset s_
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) AS s_secs \gset
\echo RESULT lookup :l_count :l_sum :l_secs :lw_secs
\echo RESULT scan :s_count :s_sum :s_secs :sw_secs
SQL
    ) || die "the reads of $3 failed"
    read -r _ _ cnt sum secs warm < <(grep '^RESULT lookup ' <<<"$out") || true
    if [ "$cnt" != "$BENCH_N" ] || [ "$sum" != $((BENCH_N * 100)) ]; then
        die "$3: the lookup join returned count $cnt, sum $sum (expected $BENCH_N, $((BENCH_N * 100)))"
    fi
    csv "$1" "$2" pg-lookup "$BENCH_N" "$secs" "nested loop; shuffled keys; warm-up ($BENCH_PG_WARMUP) $(printf '%.2f' "$warm") s"
    read -r _ _ cnt sum secs warm < <(grep '^RESULT scan ' <<<"$out") || true
    if [ "$cnt" != "$BENCH_N" ] || [ "$sum" != $((BENCH_N * 100)) ]; then
        die "$3: the ordered scan returned count $cnt, sum $sum (expected $BENCH_N, $((BENCH_N * 100)))"
    fi
    csv "$1" "$2" pg-scan "$BENCH_N" "$secs" "ORDER BY id; warm-up run $(printf '%.2f' "$warm") s"
}

# t_range R CONFIG TABLE
t_range() {
    local tps secs rows=$((RANGE_TXNS * RANGE_ROWS))
    [ "$(Q -c "SELECT count(*) FROM (SELECT v FROM $3 WHERE id >= $((BENCH_N - 99)) ORDER BY id LIMIT 100) r")" = 100 ] ||
        die "$3: the last range does not hold 100 rows"
    sed "s/@TBL@/$3/" "$WORK/range.in" >"$WORK/range_$3.pgb"
    tps=$(pgb_run "$WORK/range_$3.out" "$RANGE_MODE" -t "$RANGE_TXNS" --random-seed="$RANGE_SEED" -D n="$BENCH_N" -f "$WORK/range_$3.pgb")
    secs=$(awk -v t="$RANGE_TXNS" -v tps="$tps" 'BEGIN { printf "%.6f", t / tps }')
    csv "$1" "$2" pg-range "$rows" "$secs" "$RANGE_TXNS x $RANGE_ROWS rows; pgbench -M $RANGE_MODE"
}

# generic_plan TABLE: the range query's generic plan (what pgbench -M prepared
# runs after five executions).
generic_plan() {
    Q <<SQL
SET plan_cache_mode = force_generic_plan;
PREPARE r(bigint) AS ${RANGE_SQL//@TBL@/$1};
EXPLAIN (COSTS OFF) EXECUTE r(12345);
SQL
}

# log_plans TABLE: the plans of the read queries, once per table, and the
# generic plan of the range query (kept in GENERIC_PLAN).
log_plans() {
    local t=$1 g custom=${RANGE_SQL//@TBL@/$1}
    plan "$t: pg-lookup" "$NOJOIN EXPLAIN (COSTS OFF) ${LOOKUP_SQL//@TBL@/$t}"
    plan "$t: pg-scan" "EXPLAIN (COSTS OFF) ${SCAN_SQL//@TBL@/$t}"
    plan "$t: pg-range (custom plan, s = 12345)" "EXPLAIN (COSTS OFF) ${custom//\$1/12345}"
    g=$(generic_plan "$t")
    GENERIC_PLAN=$g
    {
        echo "== $t: pg-range (generic plan: plan_cache_mode = force_generic_plan, EXPLAIN EXECUTE)"
        awk '{ print "    " $0 }' <<<"$g"
        echo
    } >>"$BENCH_PG_PLANS"
}

for r in $(seq 1 "$BENCH_REPS"); do
    create_tables "$r"
    t_insert "$r" pg-heap "kv_heap_r$r"
    t_insert "$r" pg-sop "kv_sop_r$r"
    if [ "$r" = 1 ]; then
        log_plans "kv_heap_r1"
        log_plans "kv_sop_r1"
        # pgbench's mode for the range test, decided once on rep 1's loaded tables
        if [ -n "$BENCH_PG_MODE" ]; then
            RANGE_MODE=$BENCH_PG_MODE
        elif grep -q 'Key Cond:' <<<"$GENERIC_PLAN"; then
            RANGE_MODE=prepared
        else
            RANGE_MODE=simple
            say "WARNING: the generic plan of the range query on pg_sop has no Key Cond (see $BENCH_PG_PLANS): the range test uses pgbench -M simple for both tables"
        fi
        Q >>"$BENCH_PG_PLANS" <<SQL
\\echo == sizes after the load of rep 1
SELECT '    kv_heap_r1 table ' || pg_size_pretty(pg_table_size('kv_heap_r1')) ||
       ', primary key ' || pg_size_pretty(pg_indexes_size('kv_heap_r1')) ||
       ', shared_buffers ' || current_setting('shared_buffers');
SQL
        echo "    pg_sop database folder (store kv_r1): $(du -sh "$PGTMP_DIR/sopdb" | cut -f1)" >>"$BENCH_PG_PLANS"
    fi
    t_reads "$r" pg-heap "kv_heap_r$r"
    t_reads "$r" pg-sop "kv_sop_r$r"
    t_range "$r" pg-heap "kv_heap_r$r"
    t_range "$r" pg-sop "kv_sop_r$r"
    # the next rep's tables start from an instance without this rep's heap
    # table in shared_buffers (the store stays on disk until the instance goes)
    Q -c "DROP TABLE kv_heap_r$r" -c "DROP FOREIGN TABLE kv_sop_r$r"
done

pgtmp_cleanup
say "done in $(awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s; results in $BENCH_CSV, plans in $BENCH_PG_PLANS"

#!/usr/bin/env bash
# bench/run.sh - `make bench`: every workload on every engine, then
# PostgreSQL, then docs/bench/results.md and its charts. make bench installs
# the peers and builds build/bench/bench and pg_sop first.
#
# Settings (environment):
#   BENCH_N        keys loaded (default 1000000); PostgreSQL rows too
#   BENCH_REPS     repetitions, medians reported (default 3)
#   BENCH_W6_SECS  length of W6 (default 10); BENCH_W7_SECS of W7 (default 3)
#   BENCH_CAP_S    a phase stops after this many seconds (default 6) and
#                  reports its rate over what it did, flagged capped
#   BENCH_DIR      where the databases live (default build/bench/tmp; the
#                  same file system for every engine)
#   BENCH_SKIP_PG  1: no PostgreSQL part
#   BENCH_PG_WARMUP  scan (default: one untimed ordered scan warms each
#                  table before its lookups) or full (an untimed lookup run)
# Nothing else may run on the machine meanwhile: every engine is measured in
# turn, and the numbers are only comparable within one run.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_N:-1000000}
REPS=${BENCH_REPS:-3}
W6=${BENCH_W6_SECS:-10}
W7=${BENCH_W7_SECS:-3}
CAP=${BENCH_CAP_S:-6}
DIR=${BENCH_DIR:-build/bench/tmp}
OUT=build/bench
DOCS=docs/bench
RAW=$OUT/raw.csv
BIN=$OUT/bench
[ -x "$BIN" ] || { echo "bench/run.sh: $BIN is missing: run make bench" >&2; exit 1; }
mkdir -p "$OUT" "$DOCS" "$DIR"
rm -f "$RAW"
start=$(date +%s)

# ---- the machine, before anything runs ----
{
    echo "- date: $(date -u +%FT%TZ); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs available; $(lscpu | sed -n 's/^Hypervisor vendor: *//p' | sed 's/^./virtualised (&/;s/$/)/')"
    echo "- memory: $(free -g | awk '/^Mem:/ {print $2}') GiB; kernel $(uname -r)"
    echo "- storage: $(findmnt -no SOURCE,FSTYPE,OPTIONS -T "$DIR" | head -1)"
    dd if=/dev/zero of="$DIR/fsync-probe" bs=4k count=500 oflag=dsync 2>&1 | tail -1 |
        awk '{printf "- 500 synchronous 4 KiB writes (dd oflag=dsync): %s s, %.0f us each\n", $(NF-3), $(NF-3) * 1e6 / 500}'
    rm -f "$DIR/fsync-probe"
    echo "- packages: $(dpkg-query -W -f='${Package} ${Version}, ' liblmdb0 libsqlite3-0 librocksdb7.8 libisal2 postgresql-15 redis-server 2>/dev/null | sed 's/, $//')"
    echo "- compiler: $(cc --version | head -1), -O2 for libsop and the harness"
} > "$OUT/machine.md"

# ---- a private Redis for the Redis-coordinated configuration ----
REDIS_PID=
cleanup() { [ -z "$REDIS_PID" ] || kill "$REDIS_PID" 2>/dev/null || true; }
trap cleanup EXIT
PORT=$((20000 + RANDOM % 20000))
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --logfile "$OUT/redis.log" >/dev/null &
REDIS_PID=$!
for _ in $(seq 50); do
    redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$PORT" ping >/dev/null || { echo "bench/run.sh: redis-server did not start" >&2; exit 1; }

# ---- the engines ----
echo "bench: N=$N, $REPS repetitions, W6 ${W6} s, W7 ${W7} s, cap ${CAP} s" >&2
t0=$(date +%s)
"$BIN" --n "$N" --reps "$REPS" --dir "$DIR" --csv "$RAW" --w6-secs "$W6" --w7-secs "$W7" \
    --cap "$CAP" --redis-port "$PORT"
t_eng=$(($(date +%s) - t0))
cleanup
REDIS_PID=

# ---- PostgreSQL ----
t0=$(date +%s)
if [ "${BENCH_SKIP_PG:-0}" != 1 ]; then
    BENCH_N=$N BENCH_REPS=$REPS BENCH_CSV=$RAW BENCH_PG_PLANS=$OUT/pg_plans.txt \
        BENCH_PG_WARMUP=${BENCH_PG_WARMUP:-scan} bash bench/pg/run.sh
fi
t_pg=$(($(date +%s) - t0))

# ---- the report ----
"$BIN" --report "$RAW" "$OUT/tables.md" "$DOCS/results.dat" "$DOCS/results_pg.dat"
total=$(($(date +%s) - start))
{
    echo "# Benchmark results"
    echo
    echo "Written by \`make bench\` (bench/run.sh); do not edit. How the harness works and"
    echo "what each number means: [README.md](README.md); the profiles and what was done"
    echo "about every gap: [notes.md](notes.md)."
    echo
    echo "N = $N keys (16-byte keys, 100-byte values), $REPS repetitions (medians), W6 ${W6} s,"
    echo "W7 ${W7} s, phases capped at ${CAP} s, the same 256 MiB cache for every engine that has one."
    echo "Wall time: engines ${t_eng} s, PostgreSQL ${t_pg} s, total ${total} s."
    echo
    echo "![throughput](results.png)"
    echo
    echo "## Machine"
    echo
    cat "$OUT/machine.md"
    echo
    echo "## Settings"
    echo
    echo "| config | settings |"
    echo "|---|---|"
    "$BIN" --list-configs | awk -F'\t' '{printf "| %s | %s |\n", $1, $2}'
    echo
    cat "$OUT/tables.md"
    if [ -s "$DOCS/results_pg.dat" ] && [ "$(wc -l < "$DOCS/results_pg.dat")" -gt 1 ]; then
        echo "![PostgreSQL](results_pg.png)"
        echo
        echo "PostgreSQL $(pg_config --version 2>/dev/null | awk '{print $2}'), one temporary instance"
        echo "(PostgreSQL's defaults, fsync on); pg_sop table: slot_length 500. The plans, as logged"
        echo "by bench/pg/run.sh:"
        echo
        echo '```'
        cat "$OUT/pg_plans.txt" 2>/dev/null
        echo '```'
    fi
} > "$DOCS/results.md"
if command -v gnuplot >/dev/null; then
    gnuplot -e "N='$N'" bench/results.gp
else
    echo "bench: gnuplot is missing: no charts" >&2
fi
echo "bench: wrote $DOCS/results.md in ${total} s" >&2

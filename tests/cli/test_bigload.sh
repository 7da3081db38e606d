#!/usr/bin/env bash
# test_bigload.sh - the durable engine at volume through the CLI: 1,000,000
# keys loaded with `sop load --batch 1000`, scanned back in order, checked;
# and 100,000 keys in random order (every commit rewrites many leaves).
# SOP_TEST_LONG=1 loads 1,000,000 random-order keys as well.
set -u
SOP=${SOP_CLI:-build/bin/sop}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
bad() { echo "FAIL - $1"; failed=$((failed + 1)); }

load_and_verify() { # name lines order(seq|random)
    local name=$1 n=$2 order=$3 db="$tmp/$1"
    awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++) printf "key%010d\tvalue-%d\n", i, i }' >"$tmp/in.sorted"
    if [ "$order" = seq ]; then
        cp "$tmp/in.sorted" "$tmp/in"
    else # every key once, in a fixed pseudo-random order
        shuf --random-source=<(yes 11) "$tmp/in.sorted" >"$tmp/in"
    fi
    local start=$SECONDS
    "$SOP" init "$db" >/dev/null && "$SOP" create "$db" kv --slot-length 500 >/dev/null || {
        bad "$name: init/create"
        return
    }
    if "$SOP" load "$db" kv "$tmp/in" --batch 1000 2>"$tmp/err"; then
        ok "$name: loaded $(wc -l <"$tmp/in") lines in $((SECONDS - start)) s"
    else
        bad "$name: load failed: $(cat "$tmp/err")"
        return
    fi
    "$SOP" scan "$db" kv >"$tmp/out" || bad "$name: scan failed"
    cmp -s "$tmp/in.sorted" "$tmp/out" && ok "$name: scan returns every key in order" ||
        bad "$name: scan differs from the sorted input"
    if "$SOP" check "$db" >"$tmp/check"; then
        ok "$name: check is clean ($(tail -n 1 "$tmp/check"))"
    else
        bad "$name: check: $(cat "$tmp/check")"
    fi
    local count
    count=$("$SOP" stat "$db" kv | awk '/^count/ { print $2 }')
    [ "$count" = "$(wc -l <"$tmp/out")" ] && ok "$name: stat count $count" ||
        bad "$name: stat count '$count'"
    rm -rf "$db"
}

load_and_verify seq-1m 1000000 seq
load_and_verify random-100k 100000 random
if [ "${SOP_TEST_LONG:-}" = 1 ]; then
    load_and_verify random-1m 1000000 random
fi
echo "# test_bigload.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

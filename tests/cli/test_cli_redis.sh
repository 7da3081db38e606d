#!/usr/bin/env bash
# tests/cli/test_cli_redis.sh - the `sop` tool with --redis (docs/cli.md,
# docs/locking.md): every command takes it; a private redis-server on a free
# 127.0.0.1 port, with a password, serves the checks; an unreachable server
# or a wrong password is a clear one-line error (exit 4), never a silent
# fallback to local locking; a malformed --redis is a usage error (exit 2).
#
# Usage: SOP_CLI=path/to/sop tests/cli/test_cli_redis.sh
# Ends with "# test_cli_redis.sh: N passed, N failed"; exits non-zero if any
# check failed. redis-server missing is a failure (CI installs it).
set -u
export LC_ALL=C

SOP=${SOP_CLI:-build/bin/sop}
case $SOP in /*) ;; *) SOP=$PWD/$SOP ;; esac
T=$(mktemp -d)
RPID=
cleanup() {
    [ -n "$RPID" ] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
passed=0 failed=0
ok() {
    echo "ok - $1"
    passed=$((passed + 1))
}
fail() {
    echo "FAIL - $1: $2"
    failed=$((failed + 1))
}
finish() {
    echo "# test_cli_redis.sh: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}
run() {
    "$SOP" "$@" >"$T/out" 2>"$T/err"
    st=$?
    out=$(cat "$T/out")
    err=$(cat "$T/err")
}
# expect DESC STATUS [STDERR-SUBSTRING] -- ARGS...
expect() {
    local desc=$1 want=$2 sub=$3
    shift 4
    run "$@"
    if [ "$st" -ne "$want" ]; then
        fail "$desc" "exit status $st, wanted $want; stderr: $err"
    elif [ -n "$sub" ] && [[ $err != *"$sub"* ]]; then
        fail "$desc" "stderr lacks '$sub': $err"
    elif [ "$want" -ne 0 ] && { [ "$(wc -l <"$T/err")" -ne 1 ] || [[ $err != "sop: "* ]]; }; then
        fail "$desc" "stderr should be one 'sop: ...' line, got: $err"
    else
        ok "$desc"
    fi
}

command -v redis-server >/dev/null || {
    fail "redis-server is installed" "not found (apt-get install redis-server)"
    finish
}
# a port nothing listens on (bash's /dev/tcp connects if something does)
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}
port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$T" \
    --requirepass s3cret >"$T/redis.log" 2>&1 &
RPID=$!
for _ in $(seq 50); do
    redis-cli -p "$port" -a s3cret --no-auth-warning ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
done

R=(--redis "127.0.0.1:$port")
D=$T/db
expect "init (takes --redis like every command)" 0 "" -- init "$D" "${R[@]}" --redis-password s3cret
expect "create over redis" 0 "" -- create "$D" s "${R[@]}" --redis-password s3cret
export SOP_REDIS_PASSWORD=s3cret
expect "put with the password from SOP_REDIS_PASSWORD" 0 "" -- put "$D" s k1 v1 "${R[@]}"
expect "get over redis" 0 "" -- get "$D" s k1 "${R[@]}"
[ "$out" = v1 ] && ok "the value round-trips" || fail "the value round-trips" "got '$out'"
printf 'a\t1\nb\t2\nc\t3\n' >"$T/in.tsv"
expect "load over redis" 0 "" -- load "$D" s "$T/in.tsv" "${R[@]}"
expect "scan over redis" 0 "" -- scan "$D" s "${R[@]}"
[ "$(echo "$out" | wc -l)" -eq 4 ] && ok "scan sees every item" || fail "scan sees every item" "$out"
expect "check over redis" 0 "" -- check "$D" "${R[@]}"
expect "stores over redis" 0 "" -- stores "$D" "${R[@]}"
keys=$(redis-cli -p "$port" -a s3cret --no-auth-warning --scan --pattern 'sop:*:commit' | wc -l)
[ "$keys" -eq 0 ] && ok "no commit lock left behind" || fail "no commit lock left behind" "$keys keys"
expect "create a store kept in the shared cache" 0 "" -- create "$D" c "${R[@]}" \
    --values separate --cache registry=1m,node=1m:sliding,value=1m,info=1m
expect "put into it" 0 "" -- put "$D" c k v "${R[@]}"
expect "get it (fills the cache)" 0 "" -- get "$D" c k "${R[@]}"
expect "get it again (from the cache)" 0 "" -- get "$D" c k "${R[@]}"
[ "$out" = v ] && ok "the cached value round-trips" || fail "the cached value round-trips" "got '$out'"
for kind in H N V S; do
    n=$(redis-cli -p "$port" -a s3cret --no-auth-warning --scan --pattern "sop:*:$kind*" | wc -l)
    [ "$n" -ge 1 ] && ok "the cache holds $kind entries" || fail "the cache holds $kind entries" "$n"
done
expect "--cache with an unknown part is a usage error" 2 "no part 'nodes'" -- \
    create "$D" c2 --cache nodes=1m
expect "--cache with a bad duration is a usage error" 2 "duration" -- create "$D" c2 --cache node=1d
expect "--cache value= on in-node values is a usage error" 2 "values live in the nodes" -- \
    create "$D" c2 --cache value=1m
unset SOP_REDIS_PASSWORD
expect "a wrong password is a clear error" 4 "redis" -- get "$D" s k1 "${R[@]}" --redis-password nope
expect "no password against a protected server fails" 4 "redis" -- get "$D" s k1 "${R[@]}"
dead=$(free_port)
expect "an unreachable server is an error, not local locking" 4 "127.0.0.1:$dead" -- \
    get "$D" s k1 --redis "127.0.0.1:$dead"
expect "a bad port is a usage error" 2 "port" -- get "$D" s k1 --redis 127.0.0.1:99999
expect "an empty host is a usage error" 2 "HOST:PORT" -- get "$D" s k1 --redis :6379
expect "--redis-password without --redis is a usage error" 2 "--redis" -- \
    get "$D" s k1 --redis-password x
expect "local coordination still works on the same database" 0 "" -- get "$D" s b
finish

#!/usr/bin/env bash
# tests/cli/test_cli_stream.sh - end-to-end tests of the `sop` tool's
# streaming-store commands, upload, download and ls (docs/cli.md,
# docs/streaming.md): byte-identical round trips (sha256) of files and
# pipes, the peak RSS of an upload and a download (GNU time, under the
# 100 MiB acceptance bound, printed in the ok lines), downloads from a
# chunk, replacement by a shorter value, empty values, listings, a killed
# upload leaving no blob after recovery, a download whose value changes
# under it, and usage errors.
#
# Usage: SOP_CLI=path/to/sop tests/cli/test_cli_stream.sh   (default build/bin/sop)
# SOP_TEST_LONG=1 (make test-long) adds a 2 GiB upload from a pipe and its
# download through sha256sum, never written to disk outside the database.
# Ends with "# test_cli_stream.sh: N passed, N failed" (tests/run reads it).
set -u
shopt -s lastpipe # `cmd | timed ...` runs timed in this shell
# shellcheck source=tests/cli/lib.sh
. "$(dirname "$0")/lib.sh"

DB=$T/db
MIB=1048576
RSS_MAX_KIB=102400 # the acceptance bound: 100 MiB
TIME=/usr/bin/time # GNU time (the Debian package `time`, .ci/deps)

sha() { sha256sum "$1" | cut -d' ' -f1; }
blobs() { find "$DB/stores/$1/blob" -type f 2>/dev/null | wc -l; }

# timed OUT ARGS...: sop ARGS under GNU time, stdout into the file OUT;
# sets $st, $err and $rss (peak resident set, KiB).
timed() {
    local outf=$1
    shift
    "$TIME" -o "$T/rss" -f %M "$SOP" "$@" >"$outf" 2>"$T/err"
    st=$?
    err=$(cat "$T/err")
    rss=$(tail -n 1 "$T/rss")
}
# A sanitizer's runtime (make SANITIZE=address,...) keeps freed memory in
# quarantine and adds its shadow: the bound is for the plain build only.
sanitized=false
grep -qaE '__(a|t|m)san_init' "$SOP" && sanitized=true
# check_rss DESC: the last timed run stayed under RSS_MAX_KIB.
check_rss() {
    if $sanitized && [[ $rss =~ ^[0-9]+$ ]]; then
        ok "$1: peak RSS $rss KiB (a sanitized build: not held to $RSS_MAX_KIB KiB)"
    elif [[ $rss =~ ^[0-9]+$ ]] && [ "$rss" -lt "$RSS_MAX_KIB" ]; then
        ok "$1: peak RSS $rss KiB (< $RSS_MAX_KIB KiB)"
    else
        fail "$1" "peak RSS '$rss' KiB, wanted < $RSS_MAX_KIB"
    fi
}
# check_run DESC WANT_STATUS [STDOUT]: the last run's status, an empty
# stderr, and stdout (the variable $out or the file $T/out).
check_run() {
    local desc=$1 want=$2
    if [ "$st" -ne "$want" ] || [ -n "$err" ]; then
        fail "$desc" "status $st (wanted $want), stderr [$err]"
    elif [ $# -ge 3 ] && [ "$(cat "$T/out")" != "$3" ]; then
        fail "$desc" "stdout [$(head -c 300 "$T/out")], wanted [$3]"
    else
        ok "$desc"
    fi
}

if [ ! -x "$TIME" ]; then
    fail "GNU time is installed" "$TIME is missing (apt-get install time; .ci/deps)"
    TIME="env" # run without measuring; the RSS checks then fail
fi

# ---- help -------------------------------------------------------------------

run --help
missing=""
for c in upload download ls; do
    grep -qE "^  $c " <<<"$out" || missing="$missing $c"
done
if [ -z "$missing" ]; then ok "--help lists upload, download and ls"; else fail "--help lists upload, download and ls" "missing:$missing"; fi
for c in upload download ls; do
    run "$c" --help
    if [ "$st" -eq 0 ] && [[ $out == "usage: sop $c"* ]] && [[ $out == *Example* ]] && [ -z "$err" ]; then
        ok "$c --help shows usage and an example"
    else
        fail "$c --help shows usage and an example" "status $st: $out $err"
    fi
done

expect "init a database" 0 init "$DB"

# ---- 64 MiB in 16 MiB chunks --------------------------------------------------

head -c $((64 * MIB)) /dev/urandom >"$T/f64"
timed "$T/out" upload "$DB" media movie.mp4 "$T/f64" --chunk-size 16M
check_run "upload 64 MiB in 16 MiB chunks creates the store and reports one line" 0 \
    "uploaded 67108864 bytes in 4 chunks to media/movie.mp4"
check_rss "upload of 64 MiB in 16 MiB chunks"
expect_out "ls shows the key, 4 chunks, 67108864 bytes" 0 "$(printf 'movie.mp4\t4\t67108864')" \
    ls "$DB" media
timed "$T/dl" download "$DB" media movie.mp4
check_run "download of 64 MiB exits 0 with nothing on stderr" 0
check_rss "download of 64 MiB in 16 MiB chunks"
if [ "$(sha "$T/dl")" = "$(sha "$T/f64")" ]; then ok "the download has the upload's sha256"; else fail "the download has the upload's sha256" "$(stat -c %s "$T/dl") bytes"; fi
run stores "$DB"
if [[ $out == "$(printf 'media\t4\t')"* ]]; then ok "the new store is listed by sop stores"; else fail "the new store is listed by sop stores" "$out"; fi

# ---- an odd size, 1 MiB chunks, from a file and from stdin ------------------

{
    cat "$T/f64"
    head -c 12345 /dev/urandom
} >"$T/odd"
ODD_SIZE=$((64 * MIB + 12345))
timed "$T/out" upload "$DB" media odd "$T/odd" --chunk-size=1M
check_run "upload of 64 MiB + 12345 bytes in 1 MiB chunks makes 65 chunks" 0 \
    "uploaded $ODD_SIZE bytes in 65 chunks to media/odd"
check_rss "upload of 64 MiB + 12345 bytes in 1 MiB chunks"
# shellcheck disable=SC2002 # a pipe, not a file, on purpose
cat "$T/odd" | timed "$T/out" upload "$DB" media odd-stdin - --chunk-size 1M
check_run "upload of the same bytes from a pipe (-)" 0 "uploaded $ODD_SIZE bytes in 65 chunks to media/odd-stdin"
timed "$T/out" upload "$DB" media odd-redirect - --chunk-size 1024K <"$T/odd"
check_run "upload from stdin redirected from the file" 0 \
    "uploaded $ODD_SIZE bytes in 65 chunks to media/odd-redirect"
want=$(sha "$T/odd")
for k in odd odd-stdin odd-redirect; do
    "$SOP" download "$DB" media "$k" >"$T/dl" 2>"$T/err"
    st=$?
    if [ "$st" -eq 0 ] && [ "$(sha "$T/dl")" = "$want" ] && [ ! -s "$T/err" ]; then
        ok "download of $k has the file's sha256"
    else
        fail "download of $k has the file's sha256" "status $st, $(stat -c %s "$T/dl") bytes, $(cat "$T/err")"
    fi
done

# ---- --from-chunk ---------------------------------------------------------------

for n in 0 1 64; do
    "$SOP" download "$DB" media odd --from-chunk "$n" >"$T/dl" 2>"$T/err"
    st=$?
    tail -c +$((n * MIB + 1)) "$T/odd" >"$T/tail"
    if [ "$st" -eq 0 ] && cmp -s "$T/dl" "$T/tail"; then
        ok "download --from-chunk $n is the file from byte $((n * MIB))"
    else
        fail "download --from-chunk $n is the file from byte $((n * MIB))" "status $st, $(stat -c %s "$T/dl") bytes, $(cat "$T/err")"
    fi
done
"$SOP" download "$DB" media movie.mp4 --from-chunk=3 >"$T/dl" 2>"$T/err"
tail -c +$((3 * 16 * MIB + 1)) "$T/f64" >"$T/tail"
if cmp -s "$T/dl" "$T/tail"; then ok "download --from-chunk 3 of 16 MiB chunks (the last)"; else fail "download --from-chunk 3 of 16 MiB chunks (the last)" "$(cat "$T/err")"; fi
expect_err "download --from-chunk past the end is not found (1) and names the chunks" 1 \
    "*no chunk 65*65 chunks, 0-64*" download "$DB" media odd --from-chunk 65
if [ ! -s "$T/out" ]; then ok "... and writes nothing on stdout"; else fail "... and writes nothing on stdout" "$(stat -c %s "$T/out") bytes"; fi
expect_err "download --from-chunk -1 is a usage error" 2 "*--from-chunk*" download "$DB" media odd --from-chunk -1
expect_err "download --from-chunk x is a usage error" 2 "*--from-chunk*" download "$DB" media odd --from-chunk x

# ---- replacing a value with a shorter one -----------------------------------

head -c $((3 * MIB + 5)) /dev/urandom >"$T/short"
expect_out "re-upload of a shorter file replaces the value" 0 \
    "uploaded $((3 * MIB + 5)) bytes in 4 chunks to media/movie.mp4" \
    upload "$DB" media movie.mp4 "$T/short" --chunk-size 1M
run ls "$DB" media
if grep -qx "$(printf 'movie.mp4\t4\t%d' $((3 * MIB + 5)))" <<<"$out"; then ok "ls shows the new chunk count and size"; else fail "ls shows the new chunk count and size" "$out"; fi
"$SOP" download "$DB" media movie.mp4 >"$T/dl" 2>/dev/null
same_file "the download is the new, shorter file" "$T/dl" "$T/short"
expect_err "check is clean after the replacement (the old chunks' blobs are gone)" 0 "" check "$DB"
if [[ $out == *": clean" ]]; then ok "... check says clean"; else fail "... check says clean" "$out"; fi

# ---- empty values, tiny chunks ------------------------------------------------

: >"$T/empty"
expect_out "upload of an empty file stores one empty chunk" 0 "uploaded 0 bytes in 1 chunk to media/empty" \
    upload "$DB" media empty "$T/empty"
expect_out "download of the empty value prints nothing" 0 "" download "$DB" media empty
if [ ! -s "$T/out" ]; then ok "... not even a newline"; else fail "... not even a newline" "$(od -c "$T/out" | head -2)"; fi
printf 'hello' >"$T/hello"
expect_out "--chunk-size 1 makes one chunk per byte" 0 "uploaded 5 bytes in 5 chunks to media/hello" \
    upload "$DB" media hello "$T/hello" --chunk-size 1
expect_out "... and downloads back" 0 "hello" download "$DB" media hello
expect_out "... from chunk 3" 0 "lo" download "$DB" media hello --from-chunk 3

# ---- ls: several keys in key order ------------------------------------------

for k in b a "c 1" a0 B ключ; do
    printf '%s' "$k" | "$SOP" upload "$DB" keys "$k" - >/dev/null 2>&1 || fail "upload key $k" "status $?"
done
expect_out "ls lists every key in byte order with its chunks and bytes" 0 \
    "$(printf 'B\t1\t1\na\t1\t1\na0\t1\t2\nb\t1\t1\nc 1\t1\t3\nключ\t1\t8')" ls "$DB" keys
expect_out "ls of media lists its keys" 0 \
    "$(printf 'empty\t1\t0\nhello\t5\t5\nmovie.mp4\t4\t%d\nodd\t65\t%d\nodd-redirect\t65\t%d\nodd-stdin\t65\t%d' \
        $((3 * MIB + 5)) $ODD_SIZE $ODD_SIZE $ODD_SIZE)" ls "$DB" media

# ---- a killed upload ---------------------------------------------------------

before=$(blobs media)
mkfifo "$T/slow"
(for _ in $(seq 1 100); do
    head -c $MIB /dev/urandom || exit 0
    sleep 0.2
done) >"$T/slow" &
gen=$!
"$SOP" upload "$DB" media killed - --chunk-size 1M <"$T/slow" >/dev/null 2>&1 &
up=$!
for _ in $(seq 1 100); do # until three chunks are in their blobs (at most 10 s)
    [ "$(blobs media)" -ge $((before + 3)) ] && break
    sleep 0.1
done
during=$(blobs media)
{ # (bash's "Killed" notice goes to /dev/null)
    kill -9 "$up"
    wait "$up"
} 2>/dev/null
upst=$?
kill "$gen" 2>/dev/null
wait "$gen" 2>/dev/null
after_kill=$(blobs media)
if [ "$upst" -eq 137 ] && [ "$during" -ge $((before + 3)) ] && [ "$after_kill" -ge $((before + 3)) ]; then
    ok "an upload killed with -9 mid-stream left its chunk blobs ($before blob files before, $after_kill after the kill)"
else
    fail "an upload killed with -9 mid-stream left its chunk blobs" "status $upst, blob files: $before before, $during during, $after_kill after the kill"
fi
run check "$DB"
if [ "$st" -eq 0 ] && [[ $out == *": clean" ]] && [[ $out != *orphan* ]]; then
    ok "check after the kill: clean, no orphan blob"
else
    fail "check after the kill: clean, no orphan blob" "status $st: $out $err"
fi
after=$(blobs media)
if [ "$after" -eq "$before" ]; then ok "recovery removed the killed upload's chunk blobs ($after blob files)"; else fail "recovery removed the killed upload's chunk blobs" "$before before, $after after"; fi
run ls "$DB" media
if [ "$st" -eq 0 ] && ! grep -q '^killed' <<<"$out"; then ok "ls does not show the killed upload's key"; else fail "ls does not show the killed upload's key" "$out"; fi
expect_err "download of the killed upload's key is not found (1)" 1 "*killed*no such key*" download "$DB" media killed

# ---- a download whose value changes under it ----------------------------------

head -c $MIB /dev/urandom >"$T/v1"
head -c $MIB /dev/urandom >"$T/v2"
"$SOP" upload "$DB" media changing "$T/v1" >/dev/null 2>&1
# the download blocks on the pipe (64 KiB) until the reader wakes up; the
# value is replaced meanwhile, so its read transaction cannot commit
("$SOP" download "$DB" media changing 2>"$T/derr"
echo $? >"$T/dst") | (sleep 2; cat >"$T/dl") &
dl=$!
sleep 0.5
"$SOP" upload "$DB" media changing "$T/v2" >/dev/null 2>&1
wait "$dl"
st=$(cat "$T/dst")
err=$(cat "$T/derr")
if [ "$st" -eq 3 ] && [[ $err == "sop: download \"changing\" from media: the value changed while it was being written: the output is not consistent"* ]] &&
    [ "$(wc -l <"$T/derr")" -eq 1 ]; then
    ok "a download whose value changed exits 3 saying the output is not consistent"
else
    fail "a download whose value changed exits 3 saying the output is not consistent" "status $st, stderr [$err]"
fi
"$SOP" download "$DB" media changing >"$T/dl" 2>/dev/null
same_file "a download after the change has the new value" "$T/dl" "$T/v2"

# ---- two uploads of one key at once -------------------------------------------

# from files: the one that loses the race at commit reads its file again
"$SOP" upload "$DB" race k "$T/v1" --chunk-size 64K >/dev/null 2>"$T/e1" &
p1=$!
"$SOP" upload "$DB" race k "$T/v2" --chunk-size 64K >/dev/null 2>"$T/e2" &
p2=$!
wait "$p1"
s1=$?
wait "$p2"
s2=$?
"$SOP" download "$DB" race k >"$T/dl" 2>/dev/null
if [ "$s1" -eq 0 ] && [ "$s2" -eq 0 ] && { cmp -s "$T/dl" "$T/v1" || cmp -s "$T/dl" "$T/v2"; }; then
    ok "two uploads of one key from files both succeed (a conflict is retried); the value is one of them"
else
    fail "two uploads of one key from files both succeed" "status $s1 [$(cat "$T/e1")], $s2 [$(cat "$T/e2")]"
fi
# from pipes: a conflict cannot be retried (exit 3), if the two overlap
# shellcheck disable=SC2002 # pipes, not files, on purpose
cat "$T/v1" | "$SOP" upload "$DB" race k - --chunk-size 64K >/dev/null 2>"$T/e1" &
p1=$!
# shellcheck disable=SC2002
cat "$T/v2" | "$SOP" upload "$DB" race k - --chunk-size 64K >/dev/null 2>"$T/e2" &
p2=$!
wait "$p1"
s1=$?
wait "$p2"
s2=$?
bad=""
statuses=("$s1" "$s2")
for i in 1 2; do
    case ${statuses[i - 1]} in
    0) ;;
    3) grep -qx 'sop: upload "k" to race: another transaction changed the store meanwhile, and the input cannot be read again for a retry: run the upload again' "$T/e$i" ||
        bad="$bad [$(cat "$T/e$i")]" ;;
    *) bad="$bad status ${statuses[i - 1]} [$(cat "$T/e$i")]" ;;
    esac
done
if [ -z "$bad" ] && [ $((s1 + s2)) -le 3 ]; then
    ok "two uploads of one key from pipes: one or both succeed, a loser exits 3 saying why (statuses $s1 $s2)"
else
    fail "two uploads of one key from pipes" "statuses $s1 $s2:$bad"
fi
run check "$DB"
if [ "$st" -eq 0 ] && [[ $out == *": clean" ]]; then ok "check is clean after the races"; else fail "check is clean after the races" "status $st: $out $err"; fi

# ---- the reader goes away ------------------------------------------------------

"$SOP" download "$DB" media odd 2>"$T/err" | head -c 100 >/dev/null
st=${PIPESTATUS[0]}
err=$(cat "$T/err")
if [ "$st" -eq 4 ] && [[ $err == "sop: download \"odd\" from media: write to standard output: Broken pipe"* ]] &&
    [ "$(wc -l <"$T/err")" -eq 1 ]; then
    ok "a closed output pipe is one clean error line (status 4)"
else
    fail "a closed output pipe is one clean error line (status 4)" "status $st, stderr [$err]"
fi

# ---- progress on a terminal ------------------------------------------------------

if command -v script >/dev/null; then
    script -qec "'$SOP' upload '$DB' media tty '$T/odd' --chunk-size 1M" /dev/null >"$T/tty" 2>&1
    if grep -q "uploading media/tty: 64.0 MiB of 64.0 MiB (100%)" "$T/tty" &&
        grep -q "uploaded $ODD_SIZE bytes in 65 chunks to media/tty" "$T/tty"; then
        ok "upload shows a percentage on a terminal"
    else
        fail "upload shows a percentage on a terminal" "$(tr '\r' '\n' <"$T/tty" | tail -n 3)"
    fi
    script -qec "cat '$T/short' | '$SOP' upload '$DB' media tty -" /dev/null >"$T/tty" 2>&1
    if grep -q "uploading media/tty: 3.0 MiB" "$T/tty" && ! grep -q "uploading media/tty: [^,]*%" "$T/tty"; then
        ok "upload from a pipe shows bytes so far on a terminal"
    else
        fail "upload from a pipe shows bytes so far on a terminal" "$(tr '\r' '\n' <"$T/tty" | tail -n 3)"
    fi
    script -qec "'$SOP' download '$DB' media odd >/dev/null" /dev/null >"$T/tty" 2>&1
    if grep -q "downloading media/odd: 64.0 MiB of 64.0 MiB (100%)" "$T/tty"; then
        ok "download shows a percentage on a terminal"
    else
        fail "download shows a percentage on a terminal" "$(tr '\r' '\n' <"$T/tty" | tail -n 3)"
    fi
else
    ok "# SKIP progress on a terminal: no 'script' command"
fi

# ---- usage and other errors ------------------------------------------------------

expect_err "upload of a missing file fails (4) naming it" 4 "*open input $T/nofile*No such file*" \
    upload "$DB" media k "$T/nofile"
expect_err "upload of a folder fails (4)" 4 "*read $T*" upload "$DB" media k "$T"
for bad in 0 -1 2G 1025M abc 16MB ""; do
    expect_err "--chunk-size '$bad' is a usage error" 2 "*--chunk-size*" upload "$DB" media k "$T/hello" --chunk-size "$bad"
done
expect_out "--chunk-size 1G (the largest) is fine" 0 "uploaded 5 bytes in 1 chunk to media/big-chunk" \
    upload "$DB" media big-chunk "$T/hello" --chunk-size 1G
expect_err "upload with a missing FILE is a usage error" 2 "*missing argument FILE*" upload "$DB" media k
expect_err "upload with an extra argument is a usage error" 2 "*unexpected argument 'x'*" upload "$DB" media k "$T/hello" x
expect_err "download with an extra argument is a usage error" 2 "*unexpected argument 'x'*" download "$DB" media k x
expect_err "download without KEY is a usage error" 2 "*missing argument KEY*" download "$DB" media
expect_err "ls without STORE is a usage error" 2 "*missing argument STORE*" ls "$DB"
expect_err "ls with an extra argument is a usage error" 2 "*unexpected argument 'x'*" ls "$DB" media x
expect_err "download does not take --chunk-size" 2 "*unknown option '--chunk-size'*" download "$DB" media k --chunk-size 1M
expect_err "an empty KEY is a usage error" 2 "*KEY*" upload "$DB" media "" "$T/hello"
expect_err "download of a missing key is not found (1)" 1 "*download \"nokey\" from media: no such key*" download "$DB" media nokey
if [ ! -s "$T/out" ]; then ok "... and writes nothing on stdout"; else fail "... and writes nothing on stdout" "$(stat -c %s "$T/out") bytes"; fi
expect_err "download from a missing store is not found (1)" 1 "*nostore*" download "$DB" nostore k
expect_err "ls of a missing store is not found (1)" 1 "*nostore*" ls "$DB" nostore
expect_err "ls of a bad store name is a usage error" 2 "*store name*" ls "$DB" ../x
expect "create a store of key/value items" 0 create "$DB" plain
expect "put an item in it" 0 put "$DB" plain a b
expect_err "ls of a store that is not a streaming store fails (4)" 4 "*plain is not a streaming store*" ls "$DB" plain
expect_err "download from it fails (4)" 4 "*plain is not a streaming store*" download "$DB" plain a
expect_err "upload to it fails (4)" 4 "*plain is not a streaming store*" upload "$DB" plain a "$T/hello"
expect_out "... and leaves it alone" 0 "b" get "$DB" plain a
expect_err "upload into a missing database is not found (1)" 1 "*$T/nodb*" upload "$T/nodb" s k "$T/hello"
for c in "put keys raw v" "get keys a" "del keys a" "scan keys"; do
    # shellcheck disable=SC2086 # split on purpose
    expect_err "$c on a streaming store is refused (4): its items are chunks" 4 \
        "sop: open store keys: keys is a streaming store*sop upload*" ${c%% *} "$DB" ${c#* }
done
printf 'x\ty\n' >"$T/x.tsv"
expect_err "load into a streaming store is refused (4)" 4 "*keys is a streaming store*" load "$DB" keys "$T/x.tsv"
expect_out "... which still lists the same keys" 0 \
    "$(printf 'B\t1\t1\na\t1\t1\na0\t1\t2\nb\t1\t1\nc 1\t1\t3\nключ\t1\t8')" ls "$DB" keys
run stat "$DB" keys
if [ "$st" -eq 0 ] && grep -q '^count: *6$' <<<"$out" && grep -q '^values: *active$' <<<"$out"; then ok "stat works on a streaming store (6 chunks)"; else fail "stat works on a streaming store" "status $st: $out $err"; fi
expect "drop removes a streaming store" 0 drop "$DB" keys
expect_err "... ls then finds no store (1)" 1 "*keys*" ls "$DB" keys
if [ "$(blobs keys)" -eq 0 ]; then ok "... and its chunk blobs are gone"; else fail "... and its chunk blobs are gone" "$(blobs keys) blob files"; fi

# ---- the global options -------------------------------------------------------------

expect_err "upload takes --redis-user (a global option): it needs --redis" 2 "*--redis-user*need --redis*" \
    upload "$DB" media k "$T/hello" --redis-user u
expect_err "ls takes --redis: a malformed one is a usage error" 2 "*--redis wants HOST:PORT*" ls "$DB" media --redis :1
expect "init a replicated database" 0 init "$T/ra" --passive "$T/rb"
expect_out "upload --passive (the recorded passive path)" 0 "uploaded 67108864 bytes in 4 chunks to s/k" \
    upload "$T/ra" s k "$T/f64" --passive "$T/rb"
expect_out "ls --passive" 0 "$(printf 'k\t4\t67108864')" ls "$T/ra" s --passive "$T/rb"
"$SOP" download "$T/ra" s k --passive "$T/rb" >"$T/dl" 2>"$T/err"
same_file "download --passive" "$T/dl" "$T/f64"
if diff -r --exclude=lock "$T/ra" "$T/rb" >/dev/null; then ok "the passive side has the same files (the chunk blobs were mirrored)"; else fail "the passive side has the same files" "$(diff -rq --exclude=lock "$T/ra" "$T/rb" | head -3)"; fi
mkdir -p "$T/rc"
expect_err "download --passive naming another folder is refused (4)" 4 "*not to $T/rc*" \
    download "$T/ra" s k --passive "$T/rc"

# ---- long: 2 GiB from a pipe (SOP_TEST_LONG=1, make test-long) ----------------------

if [ "${SOP_TEST_LONG:-}" = 1 ]; then
    rm -f "$T"/f64 "$T"/odd "$T"/dl "$T"/tail # room for the 2 GiB in the database
    # the generator's bytes go to sha256sum and to sop: never to a file
    mkfifo "$T/sumfifo"
    sha256sum <"$T/sumfifo" | cut -d' ' -f1 >"$T/a.sum" &
    sum=$!
    head -c 2G /dev/urandom | tee "$T/sumfifo" | timed "$T/out" upload "$DB" big big - --chunk-size 16M
    wait "$sum"
    check_run "long: upload of 2 GiB from a pipe in 16 MiB chunks" 0 "uploaded 2147483648 bytes in 128 chunks to big/big"
    check_rss "long: upload of 2 GiB"
    expect_out "long: ls shows 128 chunks, 2147483648 bytes" 0 "$(printf 'big\t128\t2147483648')" ls "$DB" big
    "$TIME" -o "$T/rss" -f %M "$SOP" download "$DB" big big 2>"$T/err" | sha256sum | cut -d' ' -f1 >"$T/b.sum"
    st=${PIPESTATUS[0]}
    rss=$(tail -n 1 "$T/rss")
    if [ "$st" -eq 0 ] && [ -s "$T/a.sum" ] && cmp -s "$T/a.sum" "$T/b.sum"; then
        ok "long: the 2 GiB download has the upload's sha256 ($(cut -c1-16 "$T/a.sum")...)"
    else
        fail "long: the 2 GiB download has the upload's sha256" "status $st, $(cat "$T/a.sum") vs $(cat "$T/b.sum"), $(cat "$T/err")"
    fi
    check_rss "long: download of 2 GiB"
    expect_err "long: check is clean" 0 "" check "$DB"
fi

finish

#!/usr/bin/env bash
# tests/cli/test_cli.sh - end-to-end tests of the `sop` command-line tool
# (engine/cli, docs/cli.md): every command, its options and exit statuses,
# the one-line error rule, and round trips of data through put/get/scan/load.
#
# Usage: SOP_CLI=path/to/sop tests/cli/test_cli.sh   (default build/bin/sop)
# Prints "ok - ..." or "FAIL - ...: details" per check and ends with the line
# "# test_cli.sh: N passed, N failed" that tests/run reads; exits non-zero if
# any check failed. Everything happens in a temporary folder removed at exit.
set -u
# shellcheck source=tests/cli/lib.sh
. "$(dirname "$0")/lib.sh"

DB=$T/db

# ---- help, version, usage errors --------------------------------------------

expect_out "--version prints the version" 0 "sop 0.1.0" --version
run --help
if [ "$st" -eq 0 ] && [[ $out == usage:* ]]; then
    missing=""
    for c in init create stores stat put get del scan load check recover drop; do
        grep -qE "^  $c " <<<"$out" || missing="$missing $c"
    done
    if [ -z "$missing" ]; then ok "--help lists every command"; else fail "--help lists every command" "missing:$missing"; fi
else
    fail "--help lists every command" "status $st: $out"
fi
for c in init create stores stat put get del scan load check recover drop; do
    run "$c" --help
    if [ "$st" -eq 0 ] && [[ $out == "usage: sop $c"* ]] && [[ $out == *Example* ]] &&
        [ ! -s "$T/err" ]; then
        ok "$c --help shows usage and an example"
    else
        fail "$c --help shows usage and an example" "status $st: $out $err"
    fi
done
run put "$DB" s -h
if [ "$st" -eq 0 ] && [[ $out == "usage: sop put"* ]]; then ok "-h after arguments shows help"; else fail "-h after arguments shows help" "status $st"; fi
expect "no command is a usage error" 2
expect_err "an unknown command is a usage error" 2 "*unknown command 'frob'*" frob "$DB"
expect_err "an unknown option is a usage error" 2 "*unknown option '--frob'*" get "$DB" s k --frob
expect_err "an option of another command is refused" 2 "*unknown option '--batch'*" get "$DB" s k --batch 5
expect_err "a missing argument is named" 2 "*missing argument VALUE*" put "$DB" s k
expect_err "an extra argument is a usage error" 2 "*unexpected argument 'extra'*" get "$DB" s k extra
expect_err "an option without its value is a usage error" 2 "*--limit*needs a value*" scan "$DB" s --limit
expect_err "a flag given a value is a usage error" 2 "*--reverse*takes no value*" scan "$DB" s --reverse=yes

# ---- init and the hash modulus ----------------------------------------------

expect "init creates a database" 0 init "$DB"
if [ -f "$DB/sop.db" ] || [ -n "$(ls -A "$DB" 2>/dev/null)" ]; then ok "init leaves files in the folder"; else fail "init leaves files in the folder" "$DB is empty"; fi
expect "init on an existing database with the same modulus is fine" 0 init "$DB"
expect "init --hash-mod 500" 0 init "$T/h500" --hash-mod 500
expect_err "init again with --hash-mod 250 fails naming the hash modulus" 4 "*hash modulus*" init "$T/h500" --hash-mod 250
expect "init again with --hash-mod=500 is fine" 0 init --hash-mod=500 "$T/h500"
expect_err "init --hash-mod abc is a usage error" 2 "*--hash-mod*abc*" init "$T/hx" --hash-mod abc
expect_err "init --hash-mod -5 is a usage error" 2 "*--hash-mod*" init "$T/hx" --hash-mod -5
expect_err "init --hash-mod 100 (below the minimum) is refused" 2 "*hash modulus*" init "$T/hx" --hash-mod 100
expect_err "a missing database is not found (1)" 1 "*$T/nodb*" stores "$T/nodb"
expect "get in a missing database is not found (1)" 1 get "$T/nodb" s k

# ---- create, stores, stat, store names --------------------------------------

expect "create a store" 0 create "$DB" people --description "people by name"
expect_err "create an existing store fails (4)" 4 "*people*" create "$DB" people
expect "options before the arguments: create --slot-length=8 --duplicates" 0 \
    create --slot-length=8 --duplicates "$DB" tags
expect "options after the arguments: create --slot-length 4 --values separate" 0 \
    create "$DB" docs --slot-length 4 --values separate --description "with	tab"
expect "create --values active" 0 create "$DB" big --values active --slot-length 6
expect_err "create --slot-length 5 (odd) is a usage error" 2 "*even*" create "$DB" x --slot-length 5
expect_err "create --slot-length 20000 is a usage error" 2 "*--slot-length*" create "$DB" x --slot-length 20000
expect_err "create --slot-length 12abc is a usage error" 2 "*--slot-length*" create "$DB" x --slot-length 12abc
expect_err "create --values elsewhere is a usage error" 2 "*--values*" create "$DB" x --values elsewhere
expect_err "store name ../x is refused" 2 "*store name*" create "$DB" ../x
expect_err "store name a/b is refused" 2 "*store name*" create "$DB" a/b
expect_err "an empty store name is refused" 2 "*store name*" create "$DB" ""
long=$(printf 'n%.0s' $(seq 200))
expect_err "a 200-character store name is refused" 2 "*store name*" create "$DB" "$long"
expect_err "store name ../x is refused by get too" 2 "*store name*" get "$DB" ../x k
if [ ! -e "$T/x" ] && [ ! -e "$DB/a" ]; then ok "refused names created nothing outside the stores"; else fail "refused names created nothing outside the stores" "$(ls "$T")"; fi
expect_out "stores lists name, count, slot length, keys, values, description" 0 \
    "$(printf 'big\t0\t6\tunique\tactive\t\ndocs\t0\t4\tunique\tseparate\twith\\ttab\npeople\t0\t2000\tunique\tnode\tpeople by name\ntags\t0\t8\tduplicates\tnode\t')" \
    stores "$DB"
run stat "$DB" tags
if [ "$st" -eq 0 ] && grep -q '^slot length: *8$' <<<"$out" && grep -q '^keys: *duplicates$' <<<"$out" &&
    grep -q '^count: *0$' <<<"$out" && grep -q '^values: *node$' <<<"$out" &&
    grep -q '^created: *20[0-9][0-9]-' <<<"$out"; then
    ok "stat shows slot length, keys, count, values, created"
else
    fail "stat shows slot length, keys, count, values, created" "status $st: $out"
fi
expect_err "stat of a missing store is not found (1)" 1 "*nostore*" stat "$DB" nostore

# ---- put, get, del ----------------------------------------------------------

expect "put a key" 0 put "$DB" people alice "Alice Liddell"
expect_out "get it back" 0 "Alice Liddell" get "$DB" people alice
expect "put the same key replaces the value" 0 put "$DB" people alice "Alice L."
expect_out "get shows the new value" 0 "Alice L." get "$DB" people alice
run stat "$DB" people
if grep -q '^count: *1$' <<<"$out"; then ok "a replacing put keeps the count at 1"; else fail "a replacing put keeps the count at 1" "$out"; fi
printf 'Alice L.\n' >"$T/want"
"$SOP" get "$DB" people alice >"$T/got" 2>/dev/null
same_file "get prints the value and one newline" "$T/got" "$T/want"
expect "put an empty value" 0 put "$DB" people empty ""
expect_out "get an empty value" 0 "" get "$DB" people empty
expect "put a UTF-8 key and value" 0 put "$DB" people "ключ" "значение ☃"
expect_out "get a UTF-8 key" 0 "значение ☃" get "$DB" people "ключ"
expect "put with -- before a key starting with '-'" 0 put "$DB" people -- -5 minus
expect_out "get with -- finds the '-' key" 0 "minus" get -- "$DB" people -5
expect_err "a key starting with '-' without -- is an unknown option" 2 "*unknown option*" get "$DB" people -5
expect_err "get of a missing key is not found (1)" 1 "*bob*no such key*" get "$DB" people bob
expect_err "get from a missing store is not found (1)" 1 "*nostore*" get "$DB" nostore alice
expect_err "put into a missing store is not found (1)" 1 "*nostore*" put "$DB" nostore k v
expect_err "an empty key is refused" 2 "*key*" put "$DB" people "" v
expect "del a key" 0 del "$DB" people alice
expect "get after del is not found (1)" 1 get "$DB" people alice
expect_err "del of a missing key is not found (1)" 1 "*alice*no such key*" del "$DB" people alice
expect "del in a missing store is not found (1)" 1 del "$DB" nostore alice

# ---- scan -------------------------------------------------------------------

expect "create a store for scans (slot length 4: a tree of several levels)" 0 \
    create "$DB" scan --slot-length 4
for i in 07 03 10 01 05 09 02 08 04 06; do
    "$SOP" put "$DB" scan "k$i" "v$i" || fail "put k$i" "status $?"
done
all=$(for i in 01 02 03 04 05 06 07 08 09 10; do printf 'k%s\tv%s\n' $i $i; done)
lines() { for i in "$@"; do printf 'k%s\tv%s\n' "$i" "$i"; done; }
expect_out "scan lists every item in key order" 0 "$all" scan "$DB" scan
expect_out "scan --from --to is inclusive" 0 "$(lines 03 04 05)" scan "$DB" scan --from k03 --to k05
expect_out "scan --from between keys starts at the next key" 0 "$(lines 04 05)" \
    scan "$DB" scan --from k035 --to k05
expect_out "scan --to between keys stops before the next key" 0 "$(lines 08 09)" \
    scan "$DB" scan --from k08 --to k095
expect_out "scan --reverse lists every item descending" 0 "$(lines 10 09 08 07 06 05 04 03 02 01)" \
    scan "$DB" scan --reverse
expect_out "scan --reverse --from --to starts at --to" 0 "$(lines 05 04 03)" \
    scan "$DB" scan --reverse --from k03 --to k05
expect_out "scan --reverse --to between keys starts at the key below" 0 "$(lines 05 04)" \
    scan --reverse --to=k055 --from=k04 "$DB" scan
expect_out "scan --limit 3" 0 "$(lines 01 02 03)" scan "$DB" scan --limit 3
expect_out "scan --limit before the arguments" 0 "$(lines 01 02)" scan --limit 2 "$DB" scan
expect_out "scan --reverse --limit 2" 0 "$(lines 10 09)" scan "$DB" scan --reverse --limit 2
expect_out "scan --from --limit" 0 "$(lines 06 07)" scan "$DB" scan --from k06 --limit 2
expect_out "scan --limit 0 prints nothing" 0 "" scan "$DB" scan --limit 0
expect_out "scan --from past the last key prints nothing" 0 "" scan "$DB" scan --from k99
expect_out "scan --reverse --to before the first key prints nothing" 0 "" scan "$DB" scan --reverse --to k00
expect_out "scan with --from above --to prints nothing" 0 "" scan "$DB" scan --from k05 --to k03
expect_out "scan of an empty store prints nothing" 0 "" scan "$DB" big
expect_err "scan --limit -1 is a usage error" 2 "*--limit*" scan "$DB" scan --limit -1
expect_err "scan --limit x is a usage error" 2 "*--limit*" scan "$DB" scan --limit x
expect_err "scan --from '' is a usage error" 2 "*--from*" scan "$DB" scan --from ""
expect_err "scan of a missing store is not found (1)" 1 "*nostore*" scan "$DB" nostore

# ---- load -------------------------------------------------------------------

# 10,000 lines in a scrambled order, values with spaces and a TAB.
awk 'BEGIN { for (i = 0; i < 10000; i++) { k = (i * 7919) % 10000;
    printf "key%05d\tvalue %d\twith tab\n", k, k } }' >"$T/in.tsv"
sort "$T/in.tsv" >"$T/in.sorted"
expect "create a store for loads" 0 create "$DB" bulk --slot-length 100
expect_err "load 10,000 lines from a file with --batch 1000" 0 "loaded 10000 items" \
    load "$DB" bulk "$T/in.tsv" --batch 1000
"$SOP" scan "$DB" bulk >"$T/scan.out" 2>"$T/err"
same_file "scan after load equals the sorted input" "$T/scan.out" "$T/in.sorted"
expect "create a second store for loads" 0 create "$DB" bulk2 --duplicates --slot-length 64
"$SOP" load --batch 1000 "$DB" bulk2 - <"$T/in.tsv" >"$T/out" 2>"$T/err"
st=$?
if [ "$st" -eq 0 ] && [ "$(cat "$T/err")" = "loaded 10000 items" ]; then ok "load from stdin with --batch before the arguments"; else fail "load from stdin with --batch before the arguments" "status $st: $(cat "$T/err")"; fi
"$SOP" scan "$DB" bulk2 >"$T/scan.out" 2>"$T/err"
same_file "scan after a stdin load equals the sorted input" "$T/scan.out" "$T/in.sorted"
printf 'key00001\tnew one\nkey09999\tnew last\nzzz\tadded\n' >"$T/upd.tsv"
expect_err "load replaces existing keys in a unique store" 0 "loaded 3 items" load "$DB" bulk "$T/upd.tsv"
expect_out "a loaded key has its new value" 0 "new one" get "$DB" bulk key00001
run stat "$DB" bulk
if grep -q '^count: *10001$' <<<"$out"; then ok "load upsert keeps one item per key"; else fail "load upsert keeps one item per key" "$out"; fi
printf 'a\t1\nb\t2\nno tab here\nd\t4\n' >"$T/bad.tsv"
expect "create a store for a bad load" 0 create "$DB" badload
expect_err "a line without a TAB is an error naming the line" 4 "*line 3 has no TAB*lines 1-2 were loaded*" load "$DB" badload "$T/bad.tsv" --batch 10
expect_out "the lines before the bad one were loaded" 0 "$(printf 'a\t1\nb\t2')" scan "$DB" badload
expect_err "load of a missing file fails" 4 "*$T/nofile*" load "$DB" badload "$T/nofile"
expect_err "load --batch 0 is a usage error" 2 "*--batch*" load "$DB" badload "$T/in.tsv" --batch 0
expect_err "load into a missing store is not found (1)" 1 "*nostore*" load "$DB" nostore "$T/in.tsv"
printf '\tempty key\n' >"$T/emptykey.tsv"
expect_err "a line with an empty key is an error naming the line" 4 "*line 1*" load "$DB" badload "$T/emptykey.tsv"
printf 'x\ty' | "$SOP" load "$DB" badload - 2>/dev/null
expect_out "a last line without a newline is loaded" 0 "y" get "$DB" badload x

# ---- duplicates ---------------------------------------------------------------

for v in first second third; do
    "$SOP" put "$DB" tags color "$v" || fail "put color $v" "status $?"
done
expect_out "a duplicates store keeps three items for one key, in insertion order" 0 \
    "$(printf 'color\tfirst\ncolor\tsecond\ncolor\tthird')" scan "$DB" tags
expect_out "get in a duplicates store prints the first" 0 "first" get "$DB" tags color
expect "del in a duplicates store removes one item" 0 del "$DB" tags color
expect_out "the other two remain" 0 "$(printf 'color\tsecond\ncolor\tthird')" scan "$DB" tags

# Twelve items with one key spread over several nodes (slot length 4).
expect "create a duplicates store with small nodes" 0 create "$DB" dups --duplicates --slot-length 4
for i in 01 02 03 04 05 06 07 08 09 10 11 12; do printf 'a\t%s\nd\t%s\nz\t%s\n' $i $i $i; done |
    "$SOP" load "$DB" dups - --batch 5 2>/dev/null
d_up=$(for i in 01 02 03 04 05 06 07 08 09 10 11 12; do printf 'd\t%s\n' $i; done)
expect_out "scan --from d --to d lists every duplicate in insertion order" 0 "$d_up" \
    scan "$DB" dups --from d --to d
expect_out "scan --reverse --from d --to d lists them backwards" 0 "$(tac <<<"$d_up")" \
    scan "$DB" dups --from d --to d --reverse
expect_out "get of a key with duplicates across nodes prints the first" 0 "01" get "$DB" dups d

# Random bounds over the 10,001-item store (slot length 100): each bounded
# scan must equal awk's cut of the full scan.
"$SOP" scan "$DB" bulk >"$T/full" 2>/dev/null
RANDOM=42
bad=""
for n in 1 2 3 4 5 6 7 8 9 10 11 12; do
    lo=$(printf 'key%05d' $((RANDOM % 10000)))
    hi=$(printf 'key%05d' $((RANDOM % 10000)))
    [ $((n % 3)) -eq 0 ] && lo="${lo}5"  # a bound between two keys
    lim=$((RANDOM % 50 + 1))
    awk -F'\t' -v lo="$lo" -v hi="$hi" '$1 >= lo && $1 <= hi' "$T/full" >"$T/range"
    "$SOP" scan "$DB" bulk --from "$lo" --to "$hi" >"$T/got" 2>/dev/null
    cmp -s "$T/got" "$T/range" || bad="$bad [$lo..$hi]"
    "$SOP" scan "$DB" bulk --reverse --from "$lo" --to "$hi" --limit $lim >"$T/got" 2>/dev/null
    tac "$T/range" | head -n $lim | cmp -s - "$T/got" || bad="$bad [reverse $lo..$hi limit $lim]"
done
if [ -z "$bad" ]; then ok "scan with 12 random ranges, forward and reverse, matches awk"; else fail "scan with random ranges matches awk" "$bad"; fi

# ---- value placement ----------------------------------------------------------

bigval=$(head -c 60000 /dev/zero | tr '\0' 'x')
for store in docs big; do
    expect "put in a '$store' store (values outside the node)" 0 put "$DB" $store k1 "small value"
    expect "put a 60 KB value in '$store'" 0 put "$DB" $store k2 "$bigval"
    expect_out "get a value back from '$store'" 0 "small value" get "$DB" $store k1
    run get "$DB" $store k2
    if [ "$st" -eq 0 ] && [ "$out" = "$bigval" ]; then ok "get the 60 KB value back from '$store'"; else fail "get the 60 KB value back from '$store'" "status $st, ${#out} bytes"; fi
    expect "del the 60 KB value in '$store'" 0 del "$DB" $store k2
    expect "get a deleted value from '$store' is not found (1)" 1 get "$DB" $store k2
    expect "replace a value in '$store'" 0 put "$DB" $store k1 "replaced"
    for i in 3 4 5 6 7 8 9; do "$SOP" put "$DB" $store "k$i" "v$i" || fail "put k$i" "status $?"; done
    expect_out "scan '$store' after more puts and a split" 0 \
        "$(printf 'k1\treplaced\nk3\tv3\nk4\tv4\nk5\tv5\nk6\tv6\nk7\tv7\nk8\tv8\nk9\tv9')" \
        scan "$DB" $store --from k1 --to k9 --limit 20
    head -n 1000 "$T/in.tsv" >"$T/in1000.tsv"
    expect_err "load 1000 lines into '$store'" 0 "loaded 1000 items" load "$DB" $store "$T/in1000.tsv" --batch 300
    "$SOP" scan "$DB" $store --from key >"$T/scan.out" 2>"$T/err"
    sort "$T/in1000.tsv" >"$T/in1000.sorted"
    same_file "scan of '$store' after the load equals the sorted input" "$T/scan.out" "$T/in1000.sorted"
done

# ---- output errors -----------------------------------------------------------

if [ -w /dev/full ]; then
    "$SOP" scan "$DB" bulk >/dev/full 2>"$T/err"
    st=$?
    if [ $st -eq 4 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "standard output" "$T/err"; then
        ok "scan to a full device fails with one error line (4)"
    else
        fail "scan to a full device fails with one error line (4)" "status $st: $(cat "$T/err")"
    fi
    "$SOP" get "$DB" bulk key00001 >/dev/full 2>"$T/err"
    st=$?
    if [ $st -eq 4 ] && [ "$(wc -l <"$T/err")" -eq 1 ]; then ok "get to a full device fails (4)"; else fail "get to a full device fails (4)" "status $st: $(cat "$T/err")"; fi
fi

# ---- check, recover, drop -----------------------------------------------------

expect_err "check on a clean database exits 0" 0 "" check "$DB"
if [[ $out == *clean* ]]; then ok "check prints a summary ending in 'clean'"; else fail "check prints a summary ending in 'clean'" "$out"; fi
expect_out "recover exits 0 and prints nothing" 0 "" recover "$DB"
expect "recover on a missing database is not found (1)" 1 recover "$T/nodb"
expect "drop a store" 0 drop "$DB" bulk2
expect_err "stat after drop is not found (1)" 1 "*bulk2*" stat "$DB" bulk2
expect "drop again is not found (1)" 1 drop "$DB" bulk2
run stores "$DB"
if ! grep -q '^bulk2	' <<<"$out"; then ok "a dropped store is no longer listed"; else fail "a dropped store is no longer listed" "$out"; fi
expect_err "check after drop is still clean" 0 "" check "$DB"

# A damaged node: check reports problems and exits 4.
expect "create a store to damage" 0 create "$T/h500" victim --slot-length 4
for i in 1 2 3 4 5 6 7 8 9; do "$SOP" put "$T/h500" victim "k$i" "v$i" >/dev/null 2>&1; done
blob=$(find "$T/h500" -path '*victim*' -type f -size -64k ! -name '*.reg' ! -name info | grep -i blob | head -n 1)
if [ -n "$blob" ]; then
    printf 'garbage!' | dd of="$blob" bs=1 seek=20 conv=notrunc status=none
    run check "$T/h500"
    if [ "$st" -eq 4 ] && [ -n "$out" ] && [[ $err == "sop: "* ]] && [ "$(wc -l <"$T/err")" -eq 1 ]; then
        ok "check on a damaged database prints problems and exits 4"
    else
        fail "check on a damaged database prints problems and exits 4" "status $st, stdout [$out], stderr [$err]"
    fi
else
    fail "check on a damaged database prints problems and exits 4" "no node file found under $T/h500"
fi

# ---- conflicts ----------------------------------------------------------------

# A load whose one big batch rewrites key 'hot' races with a stream of puts of
# the same key: every attempt of the load conflicts, so it gives up with exit
# status 3 after its retries. The load opens the database first and then waits
# for its input; the puts start in between (opening is not under test here).
expect "create a store for conflicts" 0 create "$DB" hot --slot-length 1000
awk 'BEGIN { print "hot\tfrom load"; for (i = 0; i < 200000; i++) printf "c%07d\tv\n", i }' >"$T/hot.tsv"
{ sleep 0.4; cat "$T/hot.tsv"; } | "$SOP" load "$DB" hot - --batch 1000000 >"$T/out" 2>"$T/err" &
loader=$!
sleep 0.2
(
    end=$((SECONDS + 20))
    i=0
    while kill -0 "$loader" 2>/dev/null && [ $SECONDS -lt $end ]; do
        "$SOP" put "$DB" hot hot "put $i" >/dev/null 2>&1
        i=$((i + 1))
    done
) &
putter=$!
wait "$loader"
st=$?
wait "$putter"
err=$(cat "$T/err")
if [ "$st" -eq 3 ] && [[ $err == "sop: "*conflict*"gave up after 4 attempts"* ]] &&
    [ "$(wc -l <"$T/err")" -eq 1 ]; then
    ok "a load that keeps conflicting exits 3"
else
    fail "a load that keeps conflicting exits 3" "status $st, stderr [$err]"
fi

finish

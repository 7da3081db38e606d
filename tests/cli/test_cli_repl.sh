#!/usr/bin/env bash
# tests/cli/test_cli_repl.sh - active/passive replication through the `sop`
# tool (docs/cli.md): `sop init --passive` on a new database (both sides get
# the same files) and on an existing one (the passive side starts stale),
# the [replication] section of `sop status`, `sop failover` there and back
# (data still readable), `--passive` given to other commands (the recorded
# path or a refusal), a replaced passive drive (writes go on, the side is
# stale, failover is refused, `sop reinstate` fills it), a replaced database
# folder while the passive side is active (opened with --passive), erasure
# coding with replication, and the errors of failover and reinstate on a
# database that is not replicated. `sop check` must stay clean throughout.
#
# Usage: SOP_CLI=path/to/sop tests/cli/test_cli_repl.sh   (default build/bin/sop)
# Prints "ok - ..." or "FAIL - ...: details" per check and ends with the line
# "# test_cli_repl.sh: N passed, N failed" that tests/run reads; exits
# non-zero if any check failed. Everything happens in a temporary folder
# removed at exit.
set -u
# shellcheck source=tests/cli/lib.sh
. "$(dirname "$0")/lib.sh"


# refused_with PREFIX: the last command failed with one error line starting
# with PREFIX.
refused_with() { [ "$st" -ne 0 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && [[ $err == "$1"* ]]; }

# same_sides DESC [DIR PASSIVE]: the two sides hold the same files, the lock
# file aside (the only one not mirrored).
same_sides() {
    local d
    d=$(diff -r --exclude=lock "${2:-$DB}" "${3:-$P}" 2>&1)
    if [ -z "$d" ]; then ok "$1"; else fail "$1" "$(head -n 5 <<<"$d")"; fi
}

# clean DESC [DIR]: `sop check` exits 0 and says clean.
clean() {
    run check "${2:-$DB}"
    if [ "$st" -eq 0 ] && [[ $out == *": clean" ]]; then ok "$1"; else fail "$1" "status $st: $out $err"; fi
}

# repl_status [DIR [OPTIONS...]]: runs `sop status`; sets $repl to its
# [replication] section without the generation and changed lines, $gen to
# the generation and $changed to the changed line's value.
repl_status() {
    run status "${1:-$DB}" "${@:2}"
    repl=$(sed -n '/^\[replication\]$/,$p' <<<"$out" | grep -vE '^(generation|changed):')
    gen=$(sed -n 's/^generation:   //p' <<<"$out")
    changed=$(sed -n 's/^changed:      //p' <<<"$out")
}

# expect_repl DESC ACTIVE STATE0 STATE1 [DIR PASSIVE]: status exits 0 and its
# [replication] section shows these (a state is a glob: "stale (*)"), a
# whole generation and a UTC time.
expect_repl() {
    local desc=$1 dir=${5:-$DB} pas=${6:-$P}
    repl_status "$dir"
    local want="\[replication\]
replication:  active/passive
active:       $2
side 0:       $dir
side 0 state: $3
side 1:       $pas
side 1 state: $4"
    # shellcheck disable=SC2053
    if [ "$st" -ne 0 ] || [[ $repl != $want ]]; then
        fail "$desc" "status $st, section [$repl], wanted [$want] $err"
    elif ! [[ $gen =~ ^[1-9][0-9]*$ ]] || ! [[ $changed =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}\ [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}\ UTC$ ]]; then
        fail "$desc" "generation [$gen], changed [$changed]"
    else
        ok "$desc"
    fi
}

# all_right: every item of both stores of $DB reads back as written.
all_right() {
    { "$SOP" scan "$DB" items && "$SOP" scan "$DB" docs; } >"$T/scan" 2>"$T/scanerr" &&
        cat "$T/items.tsv" "$T/docs.tsv" | cmp -s - "$T/scan"
}
# put_more KEY: puts KEY into both stores (keys sort after the loaded ones)
# and remembers them for all_right.
put_more() {
    "$SOP" put "$DB" items "$1" "item $1" && "$SOP" put "$DB" docs "$1" "doc $1 $(printf '%0600d' 7)" || return 1
    printf '%s\titem %s\n' "$1" "$1" >>"$T/items.tsv"
    printf '%s\tdoc %s %s\n' "$1" "$1" "$(printf '%0600d' 7)" >>"$T/docs.tsv"
}

DB=$T/db
mkdir -p "$T/b"
P=$T/b/db # the passive side, "on another drive"

# ---- help and usage ---------------------------------------------------------------

run --help
check_that "--help lists failover and reinstate" has_line "^  failover " "^  reinstate "
check_that "--help mentions --passive" has_line "--passive"
for c in failover reinstate; do
    run "$c" --help
    if [ "$st" -eq 0 ] && [[ $out == "usage: sop $c DIR"* ]] && [[ $out == *Example* ]] && [ -z "$err" ]; then
        ok "$c --help shows usage and an example"
    else
        fail "$c --help shows usage and an example" "status $st: $out $err"
    fi
done
run init --help
check_that "init --help describes --passive" has_line "^  --passive PATH" "sop reinstate DIR"
run status --help
check_that "status --help describes [replication]" has_line "^  \[replication\]"
expect_err "--passive without a value is a usage error" 2 "*--passive*needs a value*" init "$DB" --passive
expect_err "--passive with an empty value is a usage error" 2 "*--passive wants a folder path*" init "$DB" --passive=
expect_err "failover takes no store" 2 "*unexpected argument*" failover "$DB" s
expect_err "reinstate takes no store" 2 "*unexpected argument*" reinstate "$DB" s
if [ ! -e "$DB" ] && [ ! -e "$P" ]; then ok "usage errors create nothing"; else fail "usage errors create nothing" "$(ls "$T" "$T/b")"; fi
expect "failover of a folder without a database is not found (1)" 1 failover "$T/nodb"
expect "reinstate of a folder without a database is not found (1)" 1 reinstate "$T/nodb"

# ---- a new replicated database ---------------------------------------------------------

expect_out "init --passive on a new database prints nothing" 0 "" init "$DB" --passive "$P"
check_that "... and nothing on stderr" [ -z "$err" ]
if [ -f "$DB/sop.db" ] && [ -f "$P/sop.db" ] && [ -f "$DB/replication" ] && [ -f "$P/replication" ]; then
    ok "init creates both sides, each with a replication state"
else
    fail "init creates both sides, each with a replication state" "$(ls "$DB" "$P" 2>&1)"
fi
expect_repl "status: both sides live, the database folder active" "$DB" live live
check_that "status: generation 1" [ "$gen" = 1 ]
run status "$DB"
check_that "status keeps [database] and [erasure coding] first" \
    [ "$(grep -E '^\[' <<<"$out" | tr '\n' ' ')" = "[database] [erasure coding] [replication] " ]
expect_out "init again with the same --passive is fine and quiet" 0 "" init "$DB" --passive "$P"
expect_out "init again without --passive is fine" 0 "" init "$DB"
expect_err "init again with another passive path is refused (usage)" 2 \
    "sop: init $DB: $DB is replicated to $P, not to $T/other*" init "$DB" --passive "$T/other"

expect "create a store with values in its nodes" 0 create "$DB" items --slot-length 8
expect "create a store with values kept apart (blob files)" 0 create "$DB" docs --values separate --slot-length 8
for i in $(seq -w 1 60); do printf 'k%s\titem %s\n' "$i" "$i"; done >"$T/items.tsv"
awk 'BEGIN { for (i = 0; i < 30; i++) { v = sprintf("doc %03d ", i);
    while (length(v) < 700 + i) v = v "abcdefghij"; printf "k%03d\t%s\n", i, v } }' >"$T/docs.tsv"
expect_err "load 60 items" 0 "loaded 60 items" load "$DB" items "$T/items.tsv" --batch 7
expect_err "load 30 values" 0 "loaded 30 items" load "$DB" docs "$T/docs.tsv" --batch 4
if put_more m001; then ok "put into both stores"; else fail "put into both stores" "put failed"; fi
if all_right; then ok "scans return every item"; else fail "scans return every item" "$(head -c 300 "$T/scanerr")"; fi
if [ -n "$(find "$P/stores" -type f -path '*/blob/*')" ]; then ok "the passive side holds blob files"; else fail "the passive side holds blob files" "$(find "$P" | head)"; fi
same_sides "both sides hold identical files (lock aside)"
clean "check is clean"

# ---- --passive given to other commands --------------------------------------------------

expect_out "get with the recorded --passive works" 0 "item 07" get "$DB" items k07 --passive "$P"
expect_out "get with the recorded --passive as a relative path works" 0 "item 07" \
    get "$DB" items k07 --passive="$(realpath --relative-to=. "$P")"
mkdir -p "$T/other"
expect_err "a --passive that is not the recorded one is refused (4)" 4 \
    "sop: open $DB: $DB is replicated to $P, not to $T/other*" get "$DB" items k07 --passive "$T/other"
expect_err "... for status too" 4 "*is replicated to $P, not to $T/other*" status "$DB" --passive "$T/other"
expect "a --passive folder that does not exist is not found (1)" 1 get "$DB" items k07 --passive "$T/missing"
if [ -z "$(ls -A "$T/other")" ]; then ok "a refused --passive folder is left alone"; else fail "a refused --passive folder is left alone" "$(ls -A "$T/other")"; fi

# ---- failover and back ---------------------------------------------------------------------

repl_status
gen0=$gen
expect_out "failover prints the new active side" 0 "failed over: the active side is now $P" failover "$DB"
expect_repl "status: the passive path is active, both live" "$P" live live
check_that "failover adds one to the generation" [ "$gen" = $((gen0 + 1)) ]
expect_out "get reads from the passive side" 0 "item 42" get "$DB" items k42
if all_right; then ok "scans after the failover return every item"; else fail "scans after the failover return every item" "$(head -c 300 "$T/scanerr")"; fi
expect_out "scan --reverse --limit 2 after the failover" 0 "m001	item m001
k60	item 60" scan "$DB" items --reverse --limit 2
if put_more m002; then ok "put while the passive path is active"; else fail "put while the passive path is active" "put failed"; fi
same_sides "the sides are identical after writes on the failed-over database"
clean "check is clean after the failover"
expect_out "failover again switches back" 0 "failed over: the active side is now $DB" failover "$DB"
expect_repl "status: the database folder is active again" "$DB" live live
check_that "the generation grew again" [ "$gen" = $((gen0 + 2)) ]
if all_right; then ok "every item reads right after switching back"; else fail "every item reads right after switching back" "$(head -c 300 "$T/scanerr")"; fi

# ---- a replaced passive drive -------------------------------------------------------------

rm -rf "$P"
mkdir "$P"
if put_more m003; then ok "a write with the passive drive replaced (empty) still succeeds"; else fail "a write with the passive drive replaced (empty) still succeeds" "put failed"; fi
expect_repl "status: the passive side is stale, with a reason" "$DB" live "stale (?*)"
check_that "the reason is not empty" has_line "^side 1 state: stale \(.+\)$"
expect_out "the item written meanwhile reads back" 0 "item m003" get "$DB" items m003
if all_right; then ok "every item reads right with the passive side stale"; else fail "every item reads right with the passive side stale" "$(head -c 300 "$T/scanerr")"; fi
clean "check is clean with the passive side stale"
expect_err "failover to a stale side is refused (4) saying why and what to do" 4 \
    "sop: failover $DB: refused: the passive side $P is stale (?*); run 'sop reinstate $DB' first" failover "$DB"
expect_repl "the refused failover changed nothing" "$DB" live "stale (?*)"
if put_more m004; then ok "more writes while stale"; else fail "more writes while stale" "put failed"; fi

run reinstate "$DB"
check_that "reinstate exits 0 and says what it copied" has_line \
    "^reinstated $P from $DB: [1-9][0-9]* files, [0-9.]+ (bytes|KiB|MiB|GiB); both sides are live$"
check_that "reinstate prints nothing on stderr when it is not a terminal" [ -z "$err" ]
check_that "reinstate prints one line" [ "$(wc -l <<<"$out")" -eq 1 ]
expect_repl "status after reinstate: both sides live" "$DB" live live
same_sides "the sides are identical again after reinstate"
clean "check is clean after reinstate"
expect_out "reinstate again: nothing to do" 0 "nothing to reinstate: both sides are live" reinstate "$DB"
expect_out "failover to the reinstated side works" 0 "failed over: the active side is now $P" failover "$DB"
if all_right; then ok "the reinstated side holds every item, the ones written while stale too"; else fail "the reinstated side holds every item" "$(head -c 300 "$T/scanerr")"; fi
clean "check on the reinstated side is clean"

# ---- the database folder replaced while the passive side is active ------------------------

rm -rf "$DB"
mkdir "$DB"
expect_err "without the database folder's files, an open finds no database (1)" 1 "*no database at $DB*" get "$DB" items k01
expect_out "with --passive the open finds the state on the passive side" 0 "item 01" get "$DB" items k01 --passive "$P"
expect_repl "status: the database folder is stale, the passive path active" "$P" "stale (?*)" live
if put_more m005; then ok "writes go on with the database folder stale"; else fail "writes go on with the database folder stale" "put failed"; fi
expect_err "failover to the stale database folder is refused (4)" 4 "*refused: the passive side $DB is stale*" failover "$DB"
run reinstate "$DB"
check_that "reinstate fills the database folder from the passive path" has_line "^reinstated $DB from $P: .*; both sides are live$"
expect_repl "status: both live, the passive path still active" "$P" live live
same_sides "the sides are identical after reinstating the database folder"
expect_out "failover back to the database folder" 0 "failed over: the active side is now $DB" failover "$DB"
if all_right; then ok "every item reads right from the reinstated database folder"; else fail "every item reads right from the reinstated database folder" "$(head -c 300 "$T/scanerr")"; fi
clean "check is clean at the end"

# ---- replication added to an existing database --------------------------------------------

E=$T/existing EP=$T/b/existing
expect "init a database without replication" 0 init "$E"
expect "create a store in it" 0 create "$E" s --values separate
expect "put in it" 0 put "$E" s k1 v1
run status "$E"
check_that "status without replication: 'replication:  none' as the last section" \
    [ "$(sed -n '/^\[replication\]$/,$p' <<<"$out")" = "[replication]
replication:  none" ]
expect_err "failover of a database that is not replicated is refused (4)" 4 \
    "sop: failover $E: $E is not replicated (set it up with 'sop init $E --passive PATH')" failover "$E"
expect_err "reinstate of a database that is not replicated is refused (4)" 4 \
    "sop: reinstate $E: $E is not replicated (set it up with 'sop init $E --passive PATH')" reinstate "$E"
run get "$E" s k1 --passive "$T/other"
check_that "a --passive for a database that is not replicated is refused (one error line)" \
    refused_with "sop: open $E: "
expect_err "init --passive on an existing database: a note says the passive side is stale" 0 \
    "the passive side $EP is stale (?*); 'sop reinstate $E' fills it" init "$E" --passive "$EP"
check_that "... and nothing on stdout" [ -z "$out" ]
expect_repl "status: the added passive side is stale" "$E" live "stale (passive side added: not yet reinstated)" "$E" "$EP"
expect_err "init again repeats the note while it is stale" 0 "*is stale*sop reinstate*" init "$E" --passive "$EP"
expect_out "the data reads as before" 0 "v1" get "$E" s k1
expect "writes work with the passive side stale" 0 put "$E" s k2 v2
expect_err "failover to the added side is refused until reinstated" 4 "*refused: the passive side $EP is stale*" failover "$E"
run reinstate "$E"
check_that "reinstate fills the added passive side" has_line "^reinstated $EP from $E: .*; both sides are live$"
expect_repl "status: both sides live" "$E" live live "$E" "$EP"
same_sides "the added passive side is identical to the database folder" "$E" "$EP"
expect_out "failover to it works" 0 "failed over: the active side is now $EP" failover "$E"
expect_out "and it holds the data" 0 "v2" get "$E" s k2
clean "check of it is clean" "$E"

# ---- erasure coding and replication ------------------------------------------------------

X=$T/ecdb XP=$T/b/ecdb
mkdir -p "$T/d0" "$T/d1" "$T/d2"
expect_out "init --ec with --passive" 0 "" init "$X" --ec "2+1:$T/d0/x,$T/d1/x,$T/d2/x" --passive "$XP"
expect "create a store with separate values" 0 create "$X" docs --values separate
expect "put a value (its shards go to the drives)" 0 put "$X" docs k "$(printf '%02000d' 5)"
run status "$X"
check_that "status shows both the drives and the replication" has_line \
    "^\(default\)	2\+1	no-repair	2	$T/d2/x	ok	-$" "^replication:  active/passive$" "^side 1:       $XP$"
same_sides "the database folder and its passive side are identical" "$X" "$XP"
if [ -n "$(find "$T/d0/x" -type f -path '*/docs/*')" ] && [ -z "$(find "$XP/stores" -type f -path '*/blob/*')" ]; then
    ok "blobs are sharded on the drives, not copied to the passive side"
else
    fail "blobs are sharded on the drives, not copied to the passive side" "$(find "$T/d0" "$XP" -type f | head)"
fi
expect_out "failover of an erasure-coded database" 0 "failed over: the active side is now $XP" failover "$X"
expect_out "the value reads back from the drives" 0 "$(printf '%02000d' 5)" get "$X" docs k
clean "check of it is clean" "$X"

finish

#!/usr/bin/env bash
# tests/cli/test_cli_ec.sh - erasure coding through the `sop` tool
# (docs/cli.md, docs/erasure_coding.md): `sop init --ec/--ec-repair`, `sop
# status`, `sop scrub [--repair]` and `sop check` on a 2+1 database whose
# drives are three temporary folders: a whole drive's store folder deleted
# (reads still right, check and scrub report it, scrub --repair heals it), a
# blob with two of its three shards gone (lost: scrub exits 4), damaged and
# missing drive folders in `sop status`, and usage errors for bad --ec values.
#
# Usage: SOP_CLI=path/to/sop tests/cli/test_cli_ec.sh   (default build/bin/sop)
# Prints "ok - ..." or "FAIL - ...: details" per check and ends with the line
# "# test_cli_ec.sh: N passed, N failed" that tests/run reads; exits non-zero
# if any check failed. Everything happens in a temporary folder removed at exit.
set -u
# shellcheck source=tests/cli/lib.sh
. "$(dirname "$0")/lib.sh"

# exits_with STATUS PATTERN...: the status, and has_line PATTERN...
exits_with() {
    local want=$1
    shift
    [ "$st" -eq "$want" ] && has_line "$@"
}
# one_err_line PATTERN: stderr is one line, matching the extended regex.
one_err_line() { [ "$(wc -l <"$T/err")" -eq 1 ] && grep -qE -- "$1" "$T/err"; }

# summary_is N_BAD N_REPAIRED N_LOST: scrub's last line has these counts.
summary_is() {
    tail -n 1 <<<"$out" | grep -qE "^scrubbed [0-9]+ stores?, [0-9]+ blobs?, [0-9]+ shards?: $1 bad, $2 repaired, $3 lost, [0-9]+ orphan blobs?$"
}

DB=$T/db
D0=$T/drive0/ec D1=$T/drive1/ec D2=$T/drive2/ec
mkdir -p "$T/drive0" "$T/drive1" "$T/drive2"

# ---- help ---------------------------------------------------------------------

run --help
check_that "--help lists status and scrub" has_line "^  status " "^  scrub "
for c in status scrub; do
    run "$c" --help
    if [ "$st" -eq 0 ] && [[ $out == "usage: sop $c DIR"* ]] && [[ $out == *Example* ]] && [ -z "$err" ]; then
        ok "$c --help shows usage and an example"
    else
        fail "$c --help shows usage and an example" "status $st: $out $err"
    fi
done
run init --help
check_that "init --help describes --ec and --ec-repair" has_line "--ec STORE=K\+P:PATH" "--ec-repair"

# ---- usage errors for --ec ------------------------------------------------------

U=$T/usage
expect_err "--ec with too few paths is a usage error" 2 "*2+1 wants 3 paths*not 2*" init "$U" --ec "2+1:$T/a,$T/b"
expect_err "--ec with too many paths is a usage error" 2 "*2+1 wants 3 paths*not 4*" init "$U" --ec "2+1:$T/a,$T/b,$T/c,$T/d"
expect_err "--ec with no paths is a usage error" 2 "*wants 3 paths*not 0*" init "$U" --ec "2+1:"
expect_err "--ec without ':' is a usage error" 2 "*--ec wants [[]STORE=]K+P:PATH*" init "$U" --ec "2+1"
expect_err "--ec without '+' is a usage error" 2 "*K+P wants*" init "$U" --ec "3:$T/a,$T/b,$T/c"
expect_err "--ec 0+1 is a usage error" 2 "*K+P wants*at least 1*" init "$U" --ec "0+1:$T/a"
expect_err "--ec 2+0 is a usage error" 2 "*K+P wants*" init "$U" --ec "2+0:$T/a,$T/b"
expect_err "--ec x+1 is a usage error" 2 "*K+P wants*" init "$U" --ec "x+1:$T/a,$T/b"
expect_err "--ec -1+2 is a usage error" 2 "*K+P wants*" init "$U" --ec="-1+2:$T/a"
expect_err "--ec 30+3 (over 32 shards) is a usage error" 2 "*K+P at most 32*" init "$U" \
    --ec "30+3:$(seq -s, -f "$T/p%g" 1 33)"
expect_err "--ec with an empty path is a usage error" 2 "*path 2 is empty*" init "$U" --ec "2+1:$T/a,,$T/c"
expect_err "--ec with an empty store name is a usage error" 2 "*no store name before '='*" init "$U" --ec "=2+1:$T/a,$T/b,$T/c"
expect_err "--ec without a value is a usage error" 2 "*--ec*needs a value*" init "$U" --ec
expect_err "--ec-repair without --ec is a usage error" 2 "*--ec-repair needs --ec*" init "$U" --ec-repair
expect_err "--ec-repair takes no value" 2 "*takes no value*" init "$U" --ec "1+1:$T/a,$T/b" --ec-repair=yes
expect_err "the same path twice is refused by the engine (usage)" 2 "*paths 0 and 1 are both*" init "$U" --ec "2+1:$T/a,$T/a,$T/c"
expect_err "a bad store name is refused by the engine (usage)" 2 "*bad store name*" init "$U" --ec "../x=1+1:$T/a,$T/b"
expect_err "two default entries are refused by the engine (usage)" 2 "*two entries*" init "$U" \
    --ec "1+1:$T/a,$T/b" --ec "1+1:$T/c,$T/d"
expect_err "--ec is for init only" 2 "*unknown option '--ec'*" create "$U" s --ec "1+1:$T/a,$T/b"
expect_err "--repair is for scrub only" 2 "*unknown option '--repair'*" check "$U" --repair
if [ ! -e "$U" ] && [ ! -e "$T/a" ]; then ok "refused --ec values create nothing"; else fail "refused --ec values create nothing" "$(ls "$T")"; fi

# ---- a 2+1 database -------------------------------------------------------------

expect_out "init a 2+1 database on three drive folders" 0 "" init "$DB" --ec "2+1:$D0,$D1,$D2"
for d in "$D0" "$D1" "$D2"; do
    if [ -f "$d/.sop-ec" ]; then ok "init marks drive folder ${d#"$T"/}"; else fail "init marks drive folder ${d#"$T"/}" "no $d/.sop-ec"; fi
done
expect_out "init again with the same --ec is fine" 0 "" init "$DB" --ec "2+1:$D0,$D1,$D2"
expect_out "init again without --ec is fine" 0 "" init "$DB"
expect_err "init again with other paths is refused" 2 "*path 2 is*" init "$DB" --ec "2+1:$D0,$D1,$T/other"
expect_err "init again with another K+P is refused" 2 "*created with*shards, not*" init "$DB" --ec "1+2:$D0,$D1,$D2"

status_head="[database]
path:         $DB
hash modulus: 250
coordination: local

[erasure coding]"
tab=$'\t'
ok_drives="(default)${tab}2+1${tab}no-repair${tab}0${tab}$D0${tab}ok${tab}-
(default)${tab}2+1${tab}no-repair${tab}1${tab}$D1${tab}ok${tab}-
(default)${tab}2+1${tab}no-repair${tab}2${tab}$D2${tab}ok${tab}-

[replication]
replication:  none"
expect_out "status shows the database and three drives ok" 0 "$status_head
$ok_drives" status "$DB"

expect "create a store with values kept apart (blobs too)" 0 create "$DB" docs --values separate --slot-length 8
expect "create a store with values in its nodes" 0 create "$DB" small --slot-length 4
awk 'BEGIN { for (i = 0; i < 40; i++) { v = sprintf("value %03d ", i);
    while (length(v) < 900 + i) v = v "abcdefghij"; printf "doc%03d\t%s\n", i, v } }' >"$T/docs.tsv"
for i in $(seq -w 1 30); do printf 'k%s\tv%s\n' "$i" "$i"; done >"$T/small.tsv"
expect_err "load 40 values into docs" 0 "loaded 40 items" load "$DB" docs "$T/docs.tsv" --batch 7
expect_err "load 30 items into small" 0 "loaded 30 items" load "$DB" small "$T/small.tsv" --batch 4
expect "put one more value" 0 put "$DB" docs extra "an extra value"
expect_out "get it back" 0 "an extra value" get "$DB" docs extra
expect_out "get a loaded value back" 0 "$(sed -n 's/^doc017\t//p' "$T/docs.tsv")" get "$DB" docs doc017

# every item of both stores, compared with what was loaded
all_right() {
    { "$SOP" scan "$DB" docs --to doc999 && "$SOP" scan "$DB" small; } >"$T/scan" 2>"$T/scanerr" &&
        cat "$T/docs.tsv" "$T/small.tsv" | cmp -s - "$T/scan"
}
if all_right; then ok "scans return every item as loaded"; else fail "scans return every item as loaded" "$(head -c 300 "$T/scanerr")"; fi
shards=$(find "$D0/docs" "$D1/docs" "$D2/docs" -type f | wc -l)
if [ "$shards" -gt 0 ] && [ $((shards % 3)) -eq 0 ] &&
    [ "$(find "$D0/docs" -type f | wc -l)" -eq $((shards / 3)) ]; then
    ok "every blob of docs has one shard on each drive ($shards shards)"
else
    fail "every blob of docs has one shard on each drive" "$shards shard files"
fi
if [ -z "$(find "$DB/stores/docs" -type f -path '*/blob/*')" ]; then ok "no plain blob files in the database folder"; else fail "no plain blob files in the database folder" "$(find "$DB/stores/docs" -path '*/blob/*' | head -3)"; fi

run check "$DB"
check_that "check on the clean database exits 0" [ "$st" -eq 0 ]
check_that "check's summary says clean" has_line "^checked 2 stores, 71 items, .*: clean$"
run scrub "$DB"
check_that "scrub on the clean database exits 0" [ "$st" -eq 0 ]
check_that "scrub prints only its summary" [ "$(wc -l <<<"$out")" -eq 1 ]
check_that "scrub's summary: no bad shards" summary_is 0 0 0
check_that "scrub counts three shards per blob" has_line "^scrubbed 2 stores, ([0-9]+) blobs, .*"
blobs=$(sed -nE 's/^scrubbed 2 stores, ([0-9]+) blobs, ([0-9]+) shards.*/\1 \2/p' <<<"$out")
if [ -n "$blobs" ] && [ $((${blobs% *} * 3)) -eq "${blobs#* }" ]; then ok "scrub reads K+P shards of every blob ($blobs)"; else fail "scrub reads K+P shards of every blob" "$out"; fi
check_that "scrub writes nothing on stderr when it is not a terminal" [ -z "$err" ]

# ---- one drive's store folder gone ------------------------------------------------

rm -rf "$D1/docs"
if all_right; then ok "with drive 1's docs folder deleted, every item still reads right"; else fail "with drive 1's docs folder deleted, every item still reads right" "$(head -c 300 "$T/scanerr")"; fi
expect_out "get still works" 0 "an extra value" get "$DB" docs extra
run check "$DB"
check_that "check exits 4" [ "$st" -eq 4 ]
check_that "check lists the missing shards of drive 1" has_line "^store docs: blob [0-9a-f-]+: shard 1 missing \($D1/docs/"
check_that "check's summary counts problems" has_line "^checked 2 stores, 71 items, .*: [0-9]+ problems$"
check_that "check's error line says problems were found" grep -q "problems found" "$T/err"
run scrub "$DB"
check_that "scrub without --repair exits 0 (nothing lost)" [ "$st" -eq 0 ]
check_that "scrub lists the bad shards" has_line "^store docs: blob [0-9a-f-]+: shard 1 missing .*\(readable from the other shards\)$"
nbad=$(grep -c "shard 1 missing" <<<"$out")
check_that "scrub's summary counts them, none repaired, none lost" summary_is "$nbad" 0 0
check_that "scrub without --repair leaves the drive alone" [ "$(find "$D1/docs" -type f 2>/dev/null | wc -l)" -eq 0 ]
expect "check still exits 4" 4 check "$DB"
run scrub "$DB" --repair
check_that "scrub --repair exits 0" [ "$st" -eq 0 ]
check_that "scrub --repair lists each shard repaired" has_line "^store docs: blob [0-9a-f-]+: shard 1 missing .*\(repaired\)$"
check_that "scrub --repair's summary: all repaired" summary_is "$nbad" "$nbad" 0
if [ "$(find "$D1/docs" -type f | wc -l)" -eq $((shards / 3)) ]; then ok "drive 1 holds its shards again"; else fail "drive 1 holds its shards again" "$(find "$D1/docs" -type f | wc -l) files"; fi
run check "$DB"
check_that "check after the repair exits 0, clean" exits_with 0 ": clean$"
run scrub "$DB"
check_that "scrub after the repair finds nothing" summary_is 0 0 0

# ---- a blob with two of its three shards gone: lost ---------------------------------

victim=$(cd "$D0/docs" && find . -type f | sort | head -n 1)
victim=${victim#./}
rm -f "$D0/docs/$victim" "$D1/docs/$victim"
run scrub "$DB"
check_that "scrub of a lost blob exits 4" [ "$st" -eq 4 ]
check_that "scrub names the lost blob" has_line "^store docs: blob ${victim#*/}: 1 of 3 shards are good, 2 are needed"
check_that "scrub's summary counts one lost blob" summary_is 2 0 1
check_that "scrub's error line says a blob cannot be read" one_err_line "^sop: scrub .*: 1 blob cannot be read"
run scrub "$DB" --repair
check_that "scrub --repair cannot bring it back: exits 4" [ "$st" -eq 4 ]
check_that "scrub --repair's summary: nothing repaired, one lost" summary_is 2 0 1
expect "check exits 4" 4 check "$DB"
# no read returns wrong bytes: each item reads right or fails with an error
wrong="" failing=0
while IFS=$'\t' read -r k v; do
    got=$("$SOP" get "$DB" docs "$k" 2>/dev/null)
    s=$?
    if [ $s -eq 0 ] && [ "$got" != "$v" ]; then wrong="$wrong $k"; fi
    [ $s -ne 0 ] && failing=$((failing + 1))
done <"$T/docs.tsv"
if [ -z "$wrong" ]; then ok "no get returns wrong bytes ($failing of 40 fail)"; else fail "no get returns wrong bytes" "wrong:$wrong"; fi

# ---- repair recorded, per-store entries, relative paths -------------------------------

mkdir -p "$T/rel"
(cd "$T/rel" && "$SOP" init db2 --ec "1+1:./r0,r1/" --ec "docs=2+2:$T/s0,$T/s1,$T/s2,$T/s3" --ec-repair) >"$T/out" 2>"$T/err"
st=$? out=$(cat "$T/out") err=$(cat "$T/err")
check_that "init with a default and a per-store entry, relative paths, --ec-repair" [ "$st" -eq 0 ]
run status "$T/rel/db2"
check_that "status lists the default entry's drives with absolute paths and repair" has_line \
    "^\(default\)${tab}1\+1${tab}repair${tab}0${tab}$T/rel/r0${tab}ok${tab}-$" \
    "^\(default\)${tab}1\+1${tab}repair${tab}1${tab}$T/rel/r1${tab}ok${tab}-$"
check_that "status lists the store entry's four drives" [ "$(grep -c "^docs${tab}2+2${tab}repair${tab}" <<<"$out")" -eq 4 ]
expect "create docs (its own entry)" 0 create "$T/rel/db2" docs --values active
expect "create other (the default entry)" 0 create "$T/rel/db2" other --values separate
expect "put in docs" 0 put "$T/rel/db2" docs k "in docs"
expect "put in other" 0 put "$T/rel/db2" other k "in other"
if [ -n "$(find "$T/s3/docs" -type f)" ] && [ -n "$(find "$T/rel/r1/other" -type f)" ] &&
    [ -z "$(find "$T/s0" "$T/rel/r0" -path '*/small/*')" ]; then
    ok "each store's blobs go to its entry's drives"
else
    fail "each store's blobs go to its entry's drives" "$(find "$T/s3" "$T/rel" -type f | head)"
fi
expect_out "get from docs" 0 "in docs" get "$T/rel/db2" docs k
expect_out "get from other" 0 "in other" get "$T/rel/db2" other k
expect_err "check on it exits 0" 0 "" check "$T/rel/db2"

# ---- status of damaged drive folders -------------------------------------------------

# A deleted drive folder is not created again on open (it may be the mount
# point of an unmounted drive): status shows it missing, reads work from the
# other two.
rm -rf "$D2"
run status "$DB"
check_that "status shows a deleted drive folder as missing" \
    has_line "^\(default\)${tab}2\+1${tab}no-repair${tab}2${tab}$D2${tab}missing${tab}$D2/.sop-ec is missing"
check_that "status exits 0 with a missing drive" [ "$st" -eq 0 ]
check_that "the open did not create the folder" [ ! -e "$D2" ]
expect_out "reads work without drive 2" 0 "an extra value" get "$DB" docs extra
# The same folder made again, empty (a replaced drive mounted): the marker
# is written on open and status shows it ok.
mkdir "$D2"
expect_out "an empty replacement drive folder gets its marker on open: status ok" 0 "$status_head
$ok_drives" status "$DB"
# A damaged marker that cannot be rewritten (something is in the way of its
# temporary file) shows as error, with the engine's detail.
printf 'not a marker' >"$D1/.sop-ec"
mkdir "$D1/.sop-ec.tmp"
run status "$DB"
check_that "status shows a damaged marker as error" \
    has_line "^\(default\)${tab}2\+1${tab}no-repair${tab}1${tab}$D1${tab}error${tab}$D1/.sop-ec is damaged$"
rmdir "$D1/.sop-ec.tmp"
run status "$DB"
check_that "a damaged marker is rewritten on open when it can be" has_line "^\(default\)${tab}2\+1${tab}no-repair${tab}1${tab}$D1${tab}ok${tab}-$"
# A drive folder marked for another database stops every open - status too:
# one error line, exit 4 (what is on disk is wrong, not the command line).
cp "$T/s0/.sop-ec-docs" "$D0/.sop-ec"
expect_err "a drive of another database: status exits 4 naming the marker" 4 \
    "sop: open $DB: $D0/.sop-ec belongs to another database*" status "$DB"
expect_err "... and so does every other command" 4 "*belongs to another database*" get "$DB" docs extra
cp "$D1/.sop-ec" "$D0/.sop-ec"
expect_err "drive folders in the wrong order: status exits 4" 4 "*holds shard 1 of a 2+1 coding*given as shard 0*" status "$DB"

# ---- no erasure coding ----------------------------------------------------------------

expect "init a database without erasure coding" 0 init "$T/plain" --hash-mod 1000
expect_out "status of it says none" 0 "[database]
path:         $T/plain
hash modulus: 1000
coordination: local

[erasure coding]
none

[replication]
replication:  none" status "$T/plain"
expect "create a store in it" 0 create "$T/plain" s --values separate
expect "put in it" 0 put "$T/plain" s k v
run scrub "$T/plain"
check_that "scrub of a database without erasure coding reads each blob as one shard" exits_with 0 \
    "^scrubbed 1 store, 2 blobs, 2 shards: 0 bad, 0 repaired, 0 lost, 0 orphan blobs$"
expect "status of a folder without a database is not found (1)" 1 status "$T/nodb"
expect "scrub of a folder without a database is not found (1)" 1 scrub "$T/nodb"
expect_err "status takes no store" 2 "*unexpected argument*" status "$T/plain" s

finish

# tests/cli/lib.sh - the harness the `sop` tool's test scripts share
# (sourced, never run by tests/run: its name does not start with test_).
#
# Sets SOP (the binary: $SOP_CLI, default build/bin/sop), T (a temporary
# folder, removed at exit, as a physical path since `sop status` prints
# absolute paths), the counters and ok/fail, run, the expect* checks,
# same_file and finish (the "# NAME: N passed, N failed" line tests/run
# reads, then the exit status).
export LC_ALL=C
TEST_NAME=$(basename "$0")

SOP=${SOP_CLI:-build/bin/sop}
case $SOP in /*) ;; *) SOP=$PWD/$SOP ;; esac
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
T=$(cd "$T" && pwd -P)
passed=0 failed=0

ok() {
    echo "ok - $1"
    passed=$((passed + 1))
}
fail() {
    echo "FAIL - $1: $2"
    failed=$((failed + 1))
}

if [ ! -x "$SOP" ]; then
    fail "the sop binary exists" "$SOP is not an executable (make build/bin/sop)"
    echo "# $TEST_NAME: $passed passed, $failed failed"
    exit 1
fi

# run ARGS...: runs sop; sets $out (stdout), $err (stderr) and $st (status).
run() {
    "$SOP" "$@" >"$T/out" 2>"$T/err"
    st=$?
    out=$(cat "$T/out")
    err=$(cat "$T/err")
}

# Status check shared by the expect* helpers: the status must be `want`, and
# a failure must print exactly one stderr line starting "sop: ".
status_ok() {
    local desc=$1 want=$2
    if [ "$st" -ne "$want" ]; then
        fail "$desc" "exit status $st, wanted $want; stderr: $err"
        return 1
    fi
    if [ "$want" -ne 0 ]; then
        local lines
        lines=$(wc -l <"$T/err")
        if [ "$lines" -ne 1 ] || [[ $err != "sop: "* ]]; then
            fail "$desc" "stderr should be one 'sop: ...' line, got: $err"
            return 1
        fi
    fi
    return 0
}

# expect DESC STATUS ARGS...: sop ARGS exits with STATUS.
expect() {
    local desc=$1 want=$2
    shift 2
    run "$@"
    status_ok "$desc" "$want" && ok "$desc"
}

# expect_out DESC STATUS STDOUT ARGS...: ... and prints exactly STDOUT
# (compared without trailing newlines).
expect_out() {
    local desc=$1 want=$2 want_out=$3
    shift 3
    run "$@"
    status_ok "$desc" "$want" || return
    if [ "$out" != "$want_out" ]; then
        fail "$desc" "stdout was [${out:0:300}], wanted [${want_out:0:300}]"
        return
    fi
    ok "$desc"
}

# expect_err DESC STATUS PATTERN ARGS...: ... and stderr matches the glob.
expect_err() {
    local desc=$1 want=$2 pattern=$3
    shift 3
    run "$@"
    status_ok "$desc" "$want" || return
    # shellcheck disable=SC2053
    if [[ $err != $pattern ]]; then
        fail "$desc" "stderr [$err] does not match [$pattern]"
        return
    fi
    ok "$desc"
}

# same_file DESC GOT WANT: the two files are byte-identical.
same_file() {
    if cmp -s "$2" "$3"; then
        ok "$1"
    else
        fail "$1" "$(diff "$2" "$3" | head -n 5)"
    fi
}

finish() {
    echo "# $TEST_NAME: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

# check_that DESC CONDITION...: the condition (a command) holds; on failure
# shows the last command's status, stdout and stderr.
check_that() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else fail "$desc" "status $st, stdout [${out:0:600}], stderr [${err:0:300}]"; fi
}
# has_line PATTERN...: stdout has a line matching each extended regex.
has_line() {
    local p
    for p in "$@"; do grep -qE -- "$p" <<<"$out" || return 1; done
}

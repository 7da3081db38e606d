#!/usr/bin/env bash
# tests/pg/pgtmp.sh - throwaway PostgreSQL 15 instances for the demo and tests.
#
# As a library:  . tests/pg/pgtmp.sh
#                pgtmp_start          # initdb + pg_ctl start; sets PGTMP_DIR, PGTMP_PORT, ...
#                pgtmp_psql -c 'SELECT 1'
#                pgtmp_stop           # or let the EXIT trap do it
# As a command:  tests/pg/pgtmp.sh [PSQL-ARGS...]
#                starts an instance, runs psql on it (interactive without arguments),
#                then stops it and removes everything.
#
# initdb refuses to run as root, so when this runs as root every server
# program runs as the Debian 'postgres' user (runuser); otherwise as the
# current user. The instance lives in a fresh temporary folder owned by that
# user (PGTMP_DIR): the data directory, the server log, the Unix socket, and
# room for SOP database folders the server must write. The server listens on
# 127.0.0.1 at a free port and on the socket in PGTMP_DIR, trusts every local
# connection, and preloads pg_sop (PGTMP_PRELOAD='' to preload nothing).
# pgtmp_start installs an EXIT trap (and INT/TERM traps that exit) running
# pgtmp_cleanup, which stops the server and removes PGTMP_DIR, so nothing is
# left running (a server that would not stop makes the exit status 1); a
# caller that sets its own EXIT trap afterwards must call pgtmp_cleanup in it.
#
# Settings (environment): PG_BINDIR (default /usr/lib/postgresql/15/bin),
# PGTMP_PRELOAD (default pg_sop), PGTMP_CONF (extra postgresql.conf lines),
# PGTMP_KEEP=1 (keep PGTMP_DIR after stopping, for a look at the log).

PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
PGTMP_PRELOAD=${PGTMP_PRELOAD-pg_sop}
PGTMP_DIR='' PGTMP_DATA='' PGTMP_LOG='' PGTMP_PORT='' PGTMP_USER=''

pgtmp_die() {
    echo "pgtmp: $*" >&2
    exit 1
}

# pgtmp_user: the OS user the server runs as (postgres when we are root).
pgtmp_user() {
    if [ "$(id -u)" -eq 0 ]; then
        id -u postgres >/dev/null 2>&1 ||
            pgtmp_die "running as root needs the 'postgres' user: install postgresql-15 (.ci/deps)"
        echo postgres
    else
        id -un
    fi
}

# pgtmp_as CMD...: runs CMD as the server's OS user, from a folder it can read.
pgtmp_as() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# pgtmp_free_port: prints a TCP port on 127.0.0.1 that nothing listens on,
# chosen at random below the kernel's ephemeral range (so an outgoing
# connection is unlikely to take it before the server binds it).
pgtmp_free_port() {
    perl -MIO::Socket::INET -e '
        for (1 .. 200) {
            my $p = 20000 + int(rand(12000));
            my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1",
                                          LocalPort => $p, Proto => "tcp");
            if ($s) { close $s; print "$p\n"; exit 0 }
        }
        exit 1' || pgtmp_die "found no free TCP port on 127.0.0.1"
}

# pgtmp_mktemp: prints a new temporary folder owned by the server's user (mode 0700).
pgtmp_mktemp() {
    local d
    d=$(mktemp -d "${TMPDIR:-/tmp}/pgtmp.XXXXXX") || pgtmp_die "cannot create a temporary folder"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$d" || pgtmp_die "cannot give $d to the postgres user"
    fi
    echo "$d"
}

# pgtmp_check_preload: the preloaded library must be installed, or the server
# would not start at all; say so plainly.
pgtmp_check_preload() {
    local lib
    [ -n "$PGTMP_PRELOAD" ] || return 0
    [ -x "$PG_BINDIR/pg_config" ] || pgtmp_die "$PG_BINDIR/pg_config is missing: install postgresql-15 (.ci/deps)"
    lib="$("$PG_BINDIR/pg_config" --pkglibdir)/$PGTMP_PRELOAD.so"
    [ -f "$lib" ] || pgtmp_die "$lib is missing: the extension is not installed (make pg-install)"
}

# pgtmp_start: creates, configures and starts an instance. Sets PGTMP_DIR,
# PGTMP_DATA, PGTMP_LOG, PGTMP_PORT, PGTMP_USER and the EXIT trap.
pgtmp_start() {
    [ -x "$PG_BINDIR/initdb" ] || pgtmp_die "$PG_BINDIR/initdb is missing: install postgresql-15 (.ci/deps)"
    pgtmp_check_preload
    PGTMP_USER=$(pgtmp_user) || exit 1
    # shellcheck disable=SC2154
    trap '_pgtmp_st=$?; pgtmp_cleanup || _pgtmp_st=1; exit $_pgtmp_st' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    PGTMP_DIR=$(pgtmp_mktemp) || exit 1
    PGTMP_DATA=$PGTMP_DIR/data
    PGTMP_LOG=$PGTMP_DIR/server.log
    PGTMP_PORT=$(pgtmp_free_port) || exit 1
    if ! pgtmp_as "$PG_BINDIR/initdb" -D "$PGTMP_DATA" --auth=trust -U "$PGTMP_USER" \
        --no-sync --encoding=UTF8 --no-locale >"$PGTMP_DIR/initdb.log" 2>&1; then
        cat "$PGTMP_DIR/initdb.log" >&2
        pgtmp_die "initdb failed (log above)"
    fi
    {
        echo "# tests/pg/pgtmp.sh"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PGTMP_PORT"
        echo "unix_socket_directories = '$PGTMP_DIR'"
        echo "shared_preload_libraries = '$PGTMP_PRELOAD'"
        echo "max_prepared_transactions = 10"
        echo "fsync = on"
        [ -z "${PGTMP_CONF:-}" ] || echo "$PGTMP_CONF"
    } | pgtmp_as tee -a "$PGTMP_DATA/postgresql.conf" >/dev/null ||
        pgtmp_die "cannot write $PGTMP_DATA/postgresql.conf"
    if ! pgtmp_as "$PG_BINDIR/pg_ctl" -D "$PGTMP_DATA" -l "$PGTMP_LOG" -w -t 60 start >/dev/null; then
        tail -n 30 "$PGTMP_LOG" >&2
        pgtmp_die "the server did not start (the end of $PGTMP_LOG above)"
    fi
}

# pgtmp_psql ARGS...: psql connected to the instance's postgres database as
# its superuser, without ~/.psqlrc.
pgtmp_psql() {
    "$PG_BINDIR/psql" -X -h "$PGTMP_DIR" -p "$PGTMP_PORT" -U "$PGTMP_USER" -d postgres "$@"
}

# pgtmp_running: true while the instance's postmaster runs.
pgtmp_running() {
    [ -n "$PGTMP_DATA" ] && [ -f "$PGTMP_DATA/postmaster.pid" ] &&
        pgtmp_as "$PG_BINDIR/pg_ctl" -D "$PGTMP_DATA" status >/dev/null 2>&1
}

# pgtmp_stop: fast shutdown (an immediate one if that does not finish).
pgtmp_stop() {
    pgtmp_running || return 0
    pgtmp_as "$PG_BINDIR/pg_ctl" -D "$PGTMP_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
        pgtmp_as "$PG_BINDIR/pg_ctl" -D "$PGTMP_DATA" -m immediate -w stop >/dev/null 2>&1
    if pgtmp_running; then
        echo "pgtmp: the server in $PGTMP_DATA does not stop" >&2
        return 1
    fi
}

# pgtmp_cleanup: stops the server and removes PGTMP_DIR (kept with PGTMP_KEEP=1);
# fails if the server would not stop.
pgtmp_cleanup() {
    if ! pgtmp_stop; then
        echo "pgtmp: left $PGTMP_DIR in place" >&2
        return 1
    fi
    if [ -n "$PGTMP_DIR" ] && [ -d "$PGTMP_DIR" ]; then
        if [ "${PGTMP_KEEP:-0}" = 1 ]; then
            echo "pgtmp: kept $PGTMP_DIR" >&2
        else
            rm -rf "$PGTMP_DIR"
        fi
    fi
    PGTMP_DIR='' PGTMP_DATA=''
}

# Run as a command: an instance for one psql session.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    pgtmp_start
    echo "pgtmp: PostgreSQL on 127.0.0.1:$PGTMP_PORT and $PGTMP_DIR (user $PGTMP_USER); removed at exit" >&2
    pgtmp_psql "$@"
fi

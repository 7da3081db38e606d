/*
 * sop.c - the `sop` command-line tool: create libsop databases and stores,
 * put, get, delete, scan and bulk-load items, upload, download and list the
 * values of streaming stores, inspect, check, scrub and recover a database,
 * and fail over and reinstate the sides of a replicated one from the shell.
 * docs/cli.md is the user guide.
 *
 * Shape: every command is one row of commands[] (its synopsis, the options it
 * accepts, its help text and the function that runs it). main() finds the
 * row, parse_args() checks the command line against it, and the run_*
 * function opens the database, does its work in one transaction (load: one
 * per batch) through session_txn(), and returns an exit status.
 *
 * Invariants:
 *  1. Only the public API in sop.h is used.
 *  2. Every failure prints exactly one line on stderr, "sop: <what>: <why>",
 *     and ends the command with one exit status (enum status); stdout carries
 *     data only (values, scan lines, listings, check, scrub, status,
 *     failover, reinstate and upload reports); notes (`load`'s count, `init
 *     --passive`'s stale side) go to stderr.
 *  3. A transaction that hit SOP_CONFLICT is run again, at most
 *     CONFLICT_RETRIES times after a short random sleep, and only while
 *     nothing it produced has been printed; a transaction body therefore
 *     never keeps state across attempts except what it printed.
 *  4. Every database opened is closed, every transaction freed and every
 *     cursor closed on every path.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sop.h"

#define SOP_CLI_VERSION "0.1.0"

#if defined(__GNUC__)
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PRINTF_LIKE(fmt, args)
#endif

/* Exit statuses (docs/cli.md). */
enum status {
    ST_OK = 0,
    ST_NOTFOUND = 1, /* missing key, store or database */
    ST_USAGE = 2,    /* bad command line (or a bad name or key given on it) */
    ST_CONFLICT = 3, /* SOP_CONFLICT after every retry */
    ST_ERROR = 4     /* anything else */
};

/* Bounds of the tool's own settings. */
#define CONFLICT_RETRIES   3  /* extra attempts after a SOP_CONFLICT */
#define RETRY_SLEEP_MS_MIN 10 /* each retry sleeps min..max ms, times the attempt */
#define RETRY_SLEEP_MS_MAX 60
#define LOAD_BATCH_DEFAULT 1000        /* items per transaction in `sop load` */
#define LOAD_BATCH_MAX     10000000    /* bounds the memory one batch holds */
#define PROGRESS_EVERY_MS  200         /* progress line refresh on a terminal */
#define LONG_TXN_MS        3600000     /* scan, load, upload...: the engine's longest transaction */
#define CHUNK_SIZE_DEFAULT (16u << 20) /* bytes per chunk in `sop upload` */
#define QUOTE_MAX          64          /* bytes of a key shown in an error message */
#define WHAT_MAX           512         /* the "what failed" part of an error line */

/* ------------------------------------------------------------------------
 * The command table
 * ------------------------------------------------------------------------ */

typedef enum opt_id {
    OPT_HASH_MOD,
    OPT_SLOT_LENGTH,
    OPT_DUPLICATES,
    OPT_VALUES,
    OPT_DESCRIPTION,
    OPT_CACHE,
    OPT_FROM,
    OPT_TO,
    OPT_REVERSE,
    OPT_LIMIT,
    OPT_BATCH,
    OPT_REDIS,
    OPT_REDIS_USER,
    OPT_REDIS_PASSWORD,
    OPT_EC,
    OPT_EC_REPAIR,
    OPT_REPAIR,
    OPT_PASSIVE,
    OPT_CHUNK_SIZE,
    OPT_FROM_CHUNK,
    OPT_COUNT_
} opt_id;

#define OPT_BIT(o) (1u << (o))
/* Accepted by every command: coordination through Redis, and the passive
 * side of a replicated database (init: sets it up; the others: must be the
 * recorded one). */
#define OPT_GLOBAL                                                                                 \
    (OPT_BIT(OPT_REDIS) | OPT_BIT(OPT_REDIS_USER) | OPT_BIT(OPT_REDIS_PASSWORD) |                  \
     OPT_BIT(OPT_PASSIVE))

/* Every long option of every command; a command accepts the ones in its mask.
 * A repeatable option may be given several times: every value is kept, in
 * order (args.rep); any other given twice keeps its last value. */
static const struct option_def {
    const char *name;
    bool has_value;
    bool repeatable;
} option_defs[OPT_COUNT_] = {
    [OPT_HASH_MOD] = {"hash-mod", true},
    [OPT_SLOT_LENGTH] = {"slot-length", true},
    [OPT_DUPLICATES] = {"duplicates", false},
    [OPT_VALUES] = {"values", true},
    [OPT_DESCRIPTION] = {"description", true},
    [OPT_CACHE] = {"cache", true},
    [OPT_FROM] = {"from", true},
    [OPT_TO] = {"to", true},
    [OPT_REVERSE] = {"reverse", false},
    [OPT_LIMIT] = {"limit", true},
    [OPT_BATCH] = {"batch", true},
    [OPT_REDIS] = {"redis", true},
    [OPT_REDIS_USER] = {"redis-user", true},
    [OPT_REDIS_PASSWORD] = {"redis-password", true},
    [OPT_EC] = {"ec", true, true},
    [OPT_EC_REPAIR] = {"ec-repair", false},
    [OPT_REPAIR] = {"repair", false},
    [OPT_PASSIVE] = {"passive", true},
    [OPT_CHUNK_SIZE] = {"chunk-size", true},
    [OPT_FROM_CHUNK] = {"from-chunk", true},
};

#define POS_MAX    4
#define REPEAT_MAX 256 /* values of repeatable options on one command line */

/* A parsed command line. */
typedef struct args {
    const char *pos[POS_MAX]; /* positional arguments, in order */
    int npos;
    const char *opt[OPT_COUNT_]; /* each option's (last) value ("" for a flag), NULL if absent */
    const char *rep[REPEAT_MAX]; /* every value of the repeatable options, in order */
    opt_id rep_opt[REPEAT_MAX];  /* the option of each */
    int nrep;
} args;

typedef struct command command;
struct command {
    const char *name;
    const char *params; /* the positional arguments, space-separated: "DIR STORE" */
    unsigned opts;      /* OPT_BIT()s accepted */
    const char *synopsis;
    const char *summary; /* one line for `sop --help` */
    const char *help;    /* the rest of `sop NAME --help` */
    int (*run)(const command *cmd, const args *a);
};

static int run_init(const command *cmd, const args *a);
static int run_create(const command *cmd, const args *a);
static int run_stores(const command *cmd, const args *a);
static int run_stat(const command *cmd, const args *a);
static int run_put(const command *cmd, const args *a);
static int run_get(const command *cmd, const args *a);
static int run_del(const command *cmd, const args *a);
static int run_scan(const command *cmd, const args *a);
static int run_load(const command *cmd, const args *a);
static int run_check(const command *cmd, const args *a);
static int run_scrub(const command *cmd, const args *a);
static int run_status(const command *cmd, const args *a);
static int run_recover(const command *cmd, const args *a);
static int run_failover(const command *cmd, const args *a);
static int run_reinstate(const command *cmd, const args *a);
static int run_drop(const command *cmd, const args *a);
static int run_upload(const command *cmd, const args *a);
static int run_download(const command *cmd, const args *a);
static int run_ls(const command *cmd, const args *a);

static const command commands[] = {
    {"init", "DIR", OPT_BIT(OPT_HASH_MOD) | OPT_BIT(OPT_EC) | OPT_BIT(OPT_EC_REPAIR),
     "sop init DIR [--hash-mod N] [--ec [STORE=]K+P:PATH,PATH,...]... [--ec-repair]\n"
     "                [--passive PATH]",
     "create a database folder",
     "Creates a database in the folder DIR (the folder itself is created if it\n"
     "does not exist, 0700). Running it again on an existing database is fine\n"
     "as long as the hash modulus, the --ec entries and the --passive path are\n"
     "the same (or not given). The --ec entries, --ec-repair and the passive\n"
     "path are recorded in the database and fixed for its life; every command\n"
     "uses them as recorded.\n"
     "\n"
     "Options:\n"
     "  --hash-mod N   the registry's hash modulus, 250..750000 (default 250).\n"
     "                 It is fixed for the database's life: each registry\n"
     "                 segment is N x 4 KiB, so large databases want a larger N.\n"
     "  --ec K+P:PATH,PATH,...\n"
     "                 erasure coding: every blob of every store (nodes and\n"
     "                 separately kept values) is cut into K data and P parity\n"
     "                 shards, shard i kept under the i-th PATH - exactly K+P\n"
     "                 folders, one per drive (K and P at least 1, K+P at most\n"
     "                 32). Any P drives may fail. Relative PATHs are recorded\n"
     "                 as absolute ones; a PATH cannot contain ','.\n"
     "  --ec STORE=K+P:PATH,PATH,...\n"
     "                 the same for one store only (it need not exist yet);\n"
     "                 repeat --ec for more stores. Stores without an entry use\n"
     "                 the one without STORE=, or with none, plain files in DIR.\n"
     "  --ec-repair    reads rewrite the missing and bad shards they find (for\n"
     "                 every entry)\n"
     "  --passive PATH\n"
     "                 active/passive replication: the folder PATH, on another\n"
     "                 drive, receives every write made to DIR (everything but\n"
     "                 DIR/lock), so the database survives the loss of either\n"
     "                 drive; see 'sop failover' and 'sop reinstate'. PATH is\n"
     "                 created if missing (not its parents). On a new database\n"
     "                 both sides start live; added to an existing one, the\n"
     "                 passive side starts stale (a note on standard error says\n"
     "                 so) until 'sop reinstate DIR' fills it. Every other\n"
     "                 command finds PATH recorded; given to one, --passive\n"
     "                 must name the same folder (status 4 otherwise).\n"
     "\n"
     "Examples:\n"
     "  sop init ./shop --hash-mod 1000\n"
     "  sop init ./shop --ec 2+1:/mnt/d0/shop,/mnt/d1/shop,/mnt/d2/shop --ec-repair\n"
     "  sop init ./shop --ec orders=3+2:/mnt/d0/o,/mnt/d1/o,/mnt/d2/o,/mnt/d3/o,/mnt/d4/o\n"
     "  sop init /mnt/a/shop --passive /mnt/b/shop\n",
     run_init},
    {"status", "DIR", 0, "sop status DIR", "show a database's settings, drives and replication",
     "Prints the state of the database in sections, each a '[NAME]' line and\n"
     "the section's lines, with an empty line between sections:\n"
     "\n"
     "  [database]        'field: value' lines: path (absolute), hash modulus,\n"
     "                    coordination ('local' or 'redis HOST:PORT')\n"
     "  [erasure coding]  'none', or one line per drive folder with these\n"
     "                    TAB-separated fields: entry ('(default)' or a store\n"
     "                    name), K+P, 'repair' or 'no-repair', shard index,\n"
     "                    path, state (ok, missing, wrong-database or error) and\n"
     "                    detail ('-' when ok)\n"
     "  [replication]     'field: value' lines: replication ('none', then no\n"
     "                    more lines, or 'active/passive'), active (the folder\n"
     "                    in use), side 0 (the database folder), side 0 state,\n"
     "                    side 1 (the passive path), side 1 state ('live' or\n"
     "                    'stale (WHY)'), generation and changed (UTC) of the\n"
     "                    replication state\n"
     "\n"
     "Later versions may add sections; find a section by its '[NAME]' line.\n"
     "Opening a database writes a missing or damaged drive marker again (a\n"
     "replaced drive), so a drive shows as 'missing' or 'error' only when that\n"
     "failed; a drive marked for another database stops the open (status 4).\n"
     "A stale side is one that missed writes (a failed or replaced drive): it\n"
     "is not used until 'sop reinstate DIR' copies the active side over it.\n"
     "\n"
     "Example:\n"
     "  sop status ./shop\n",
     run_status},
    {"create", "DIR STORE",
     OPT_BIT(OPT_SLOT_LENGTH) | OPT_BIT(OPT_DUPLICATES) | OPT_BIT(OPT_VALUES) |
         OPT_BIT(OPT_DESCRIPTION) | OPT_BIT(OPT_CACHE),
     "sop create DIR STORE [--slot-length N] [--duplicates] [--values node|separate|active]\n"
     "                  [--description TEXT] [--cache SPEC]",
     "create a store",
     "Creates an empty store (one B-tree of key/value items) named STORE.\n"
     "Store names are 1..128 letters, digits, '_' and '-' (not first).\n"
     "\n"
     "Options:\n"
     "  --slot-length N      items per node, an even number 4..10000 (default 2000).\n"
     "                       Small nodes suit random writes, big ones scans.\n"
     "  --duplicates         allow several items with the same key (default:\n"
     "                       one item per key)\n"
     "  --values PLACE       where values live: 'node' (inside the B-tree node;\n"
     "                       small values, the default), 'separate' (one file per\n"
     "                       value, written at commit; medium values) or 'active'\n"
     "                       (one file per value, written at once; big values)\n"
     "  --description TEXT   a note kept with the store (up to 512 bytes)\n"
     "  --cache SPEC         what the shared cache in Redis may keep, and how long:\n"
     "                       PART=DURATION[:sliding],... with PART one of\n"
     "                       registry, node, value, info and DURATION like 500ms,\n"
     "                       30s, 5m, 1h (default: nothing cached). Values are\n"
     "                       cached only with --values separate or active.\n"
     "\n"
     "Examples:\n"
     "  sop create ./shop orders --slot-length 500 --description \"orders by id\"\n"
     "  sop create ./shop items --cache node=5m:sliding,registry=10s,info=10s\n",
     run_create},
    {"stores", "DIR", 0, "sop stores DIR", "list the stores of a database",
     "Prints one line per store, in name order, with these TAB-separated\n"
     "fields: name, item count, slot length, 'unique' or 'duplicates', value\n"
     "placement (node, separate or active) and description.\n"
     "\n"
     "Example:\n"
     "  sop stores ./shop\n"
     "  orders\t1200\t500\tunique\tnode\torders by id\n",
     run_stores},
    {"stat", "DIR STORE", 0, "sop stat DIR STORE", "show a store's settings and tree statistics",
     "Prints a store's settings and the shape of its B-tree, one 'field: value'\n"
     "line each: store, description, count, nodes, leaves, height, fill (items\n"
     "per available slot), slot length, keys, values, created and updated\n"
     "(UTC).\n"
     "\n"
     "Example:\n"
     "  sop stat ./shop orders\n",
     run_stat},
    {"put", "DIR STORE KEY VALUE", 0, "sop put DIR STORE KEY VALUE", "store a value under a key",
     "Stores VALUE under KEY. In a store with unique keys an existing item's\n"
     "value is replaced; in a store with duplicate keys another item is added.\n"
     "Use -- before KEY if it starts with '-'.\n"
     "\n"
     "Example:\n"
     "  sop put ./shop orders 1001 '{\"total\": 42}'\n"
     "  sop put ./shop temps -- -5 cold\n",
     run_put},
    {"get", "DIR STORE KEY", 0, "sop get DIR STORE KEY", "print the value of a key",
     "Prints the value stored under KEY, as is, followed by a newline. In a\n"
     "store with duplicate keys it prints the first (oldest) item's value.\n"
     "Exits with status 1 if there is no such key.\n"
     "\n"
     "Example:\n"
     "  sop get ./shop orders 1001\n",
     run_get},
    {"del", "DIR STORE KEY", 0, "sop del DIR STORE KEY", "remove a key",
     "Removes the item with KEY; in a store with duplicate keys, the first\n"
     "(oldest) one - run it again to remove the next. Exits with status 1 if\n"
     "there is no such key.\n"
     "\n"
     "Example:\n"
     "  sop del ./shop orders 1001\n",
     run_del},
    {"scan", "DIR STORE",
     OPT_BIT(OPT_FROM) | OPT_BIT(OPT_TO) | OPT_BIT(OPT_REVERSE) | OPT_BIT(OPT_LIMIT),
     "sop scan DIR STORE [--from KEY] [--to KEY] [--reverse] [--limit N]",
     "list items in key order",
     "Prints items as 'key<TAB>value' lines, keys in ascending byte order (the\n"
     "order the store keeps them in).\n"
     "\n"
     "Options:\n"
     "  --from KEY   start at KEY, or the first key after it (inclusive)\n"
     "  --to KEY     stop after KEY (inclusive)\n"
     "  --reverse    descending order: start at --to (or the last item) and go\n"
     "               down to --from (or the first item)\n"
     "  --limit N    print at most N items\n"
     "\n"
     "Example:\n"
     "  sop scan ./shop orders --from 1000 --to 1999 --reverse --limit 10\n",
     run_scan},
    {"load", "DIR STORE FILE", OPT_BIT(OPT_BATCH), "sop load DIR STORE FILE|- [--batch N]",
     "load key<TAB>value lines from a file or stdin",
     "Reads lines 'key<TAB>value' from FILE ('-' for standard input) and puts\n"
     "each item as 'sop put' would: replacing in a unique store, adding in one\n"
     "with duplicates. The key ends at the first TAB; the value is the rest of\n"
     "the line. A line without a TAB stops the load with an error naming it;\n"
     "every line before it is loaded. N items are committed per transaction.\n"
     "Progress is shown on standard error when it is a terminal; at the end\n"
     "'loaded N items' is printed there.\n"
     "\n"
     "Options:\n"
     "  --batch N   items per transaction, 1..10000000 (default 1000)\n"
     "\n"
     "Example:\n"
     "  sop load ./shop orders orders.tsv --batch 5000\n"
     "  sop scan ./old orders | sop load ./shop orders -\n",
     run_load},
    {"upload", "DIR STORE KEY FILE", OPT_BIT(OPT_CHUNK_SIZE),
     "sop upload DIR STORE KEY FILE|- [--chunk-size SIZE]",
     "store a file (or stdin) as a value of a streaming store",
     "Reads FILE ('-' for standard input) and stores its bytes as the value of\n"
     "KEY in the streaming store STORE, cut into chunks of SIZE bytes (the\n"
     "last one may be shorter), all in one transaction: the value appears\n"
     "whole when the upload ends, or not at all if it fails or is killed.\n"
     "STORE is created as a streaming store if there is none; an existing\n"
     "value of KEY is replaced. Memory use is about one chunk, whatever the\n"
     "file's size; an upload must finish within an hour. On success one line\n"
     "on standard output says 'uploaded N bytes in N chunks to STORE/KEY'.\n"
     "Progress is shown on standard error when it is a terminal.\n"
     "\n"
     "Options:\n"
     "  --chunk-size SIZE   bytes per chunk, 1 to 1G, with an optional K, M or\n"
     "                      G suffix (powers of 1024): 65536, 512K, 16M\n"
     "                      (default 16M)\n"
     "\n"
     "Examples:\n"
     "  sop upload ./media videos movie.mp4 ~/movie.mp4\n"
     "  uploaded 67108864 bytes in 4 chunks to videos/movie.mp4\n"
     "  tar c photos | sop upload ./media backups photos.tar - --chunk-size 64M\n",
     run_upload},
    {"download", "DIR STORE KEY", OPT_BIT(OPT_FROM_CHUNK),
     "sop download DIR STORE KEY [--from-chunk N]", "write a value of a streaming store to stdout",
     "Writes the value of KEY in the streaming store STORE to standard output,\n"
     "chunk by chunk (memory use is about one chunk), in one read\n"
     "transaction. If the value changed while it was written (another upload\n"
     "committed), the output is not consistent: the command then fails with\n"
     "status 3 and says so. A missing store, key or chunk exits with status 1\n"
     "and writes nothing. Progress is shown on standard error when it is a\n"
     "terminal.\n"
     "\n"
     "Options:\n"
     "  --from-chunk N   start at chunk N (chunks count from 0): the output is\n"
     "                   then the value from byte N x chunk size on\n"
     "\n"
     "Examples:\n"
     "  sop download ./media videos movie.mp4 > movie.mp4\n"
     "  sop download ./media videos movie.mp4 --from-chunk 2 >> partial.mp4\n",
     run_download},
    {"ls", "DIR STORE", 0, "sop ls DIR STORE", "list the keys of a streaming store",
     "Prints one line per key of the streaming store STORE, in key order, with\n"
     "these TAB-separated fields: key (as is), number of chunks, bytes.\n"
     "\n"
     "Example:\n"
     "  sop ls ./media videos\n"
     "  movie.mp4\t4\t67108864\n",
     run_ls},
    {"check", "DIR", 0, "sop check DIR", "verify a whole database",
     "Checks every registry block, node, tree invariant, store count and blob\n"
     "of the database (after running recovery), prints each problem found on\n"
     "its own line and then a summary line. With erasure coding every shard\n"
     "is read too: a bad shard is a problem even when its blob can be read.\n"
     "Exits with status 0 only when the database is clean, 4 otherwise.\n"
     "\n"
     "Example:\n"
     "  sop check ./shop\n",
     run_check},
    {"scrub", "DIR", OPT_BIT(OPT_REPAIR), "sop scrub DIR [--repair]",
     "read and verify every shard of every blob",
     "Runs the checks of 'sop check' and reads every blob of every store -\n"
     "with erasure coding, every shard of it - and verifies each. Prints each\n"
     "bad shard, unreadable blob, orphan blob and repair on its own line, then\n"
     "the summary line\n"
     "  scrubbed N stores, N blobs, N shards: N bad, N repaired, N lost, N orphan blobs\n"
     "Bad shards that can be rebuilt do not fail the scrub: it exits with\n"
     "status 0 when every blob can be read and the check finds nothing else,\n"
     "4 otherwise. Progress is shown on standard error when it is a terminal.\n"
     "\n"
     "Options:\n"
     "  --repair   rewrite the missing and bad shards that can be rebuilt, and\n"
     "             remove orphan blobs\n"
     "\n"
     "Example:\n"
     "  sop scrub ./shop --repair\n",
     run_scrub},
    {"recover", "DIR", 0, "sop recover DIR", "finish what a crashed process left behind",
     "Rolls forward transactions that committed before a crash and rolls back\n"
     "the ones that did not (prepared transactions are left for their\n"
     "coordinator). Opening a database does this too; the command exists to\n"
     "run it on demand. Prints nothing on success.\n"
     "\n"
     "Example:\n"
     "  sop recover ./shop\n",
     run_recover},
    {"failover", "DIR", 0, "sop failover DIR",
     "make the passive side of a replicated database active",
     "A planned switch-over of a replicated database (sop init DIR --passive\n"
     "PATH): the passive side becomes the active one - the side reads come\n"
     "from - and the active side the passive one; both keep receiving every\n"
     "write. Run it again to switch back. Prints the side that is now active.\n"
     "Refused (status 4) when the passive side is stale - run 'sop reinstate\n"
     "DIR' first - or the database is not replicated. A failing active drive\n"
     "fails over by itself; this command is for maintenance.\n"
     "\n"
     "Example:\n"
     "  sop failover /mnt/a/shop\n"
     "  failed over: the active side is now /mnt/b/shop\n",
     run_failover},
    {"reinstate", "DIR", 0, "sop reinstate DIR", "refill a stale side of a replicated database",
     "Brings a stale side of a replicated database back (a replaced or repaired\n"
     "drive): copies the active side over it and marks it live. The database\n"
     "stays usable meanwhile (commits wait during the copy). Progress is shown\n"
     "on standard error when it is a terminal; at the end one line on standard\n"
     "output says what was copied, or 'nothing to reinstate: both sides are\n"
     "live'. Exits with status 4 if the database is not replicated or the copy\n"
     "failed (the side then stays stale).\n"
     "\n"
     "Example:\n"
     "  sop reinstate /mnt/a/shop\n"
     "  reinstated /mnt/b/shop from /mnt/a/shop: 52 files, 1.3 MiB; both sides are live\n",
     run_reinstate},
    {"drop", "DIR STORE", 0, "sop drop DIR STORE", "remove a store and all its items",
     "Removes the store STORE and every item in it. Exits with status 1 if there\n"
     "is no such store.\n"
     "\n"
     "Example:\n"
     "  sop drop ./shop orders\n",
     run_drop},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void print_main_help(FILE *f)
{
    fprintf(f, "usage: sop COMMAND ARGS... [OPTIONS]\n"
               "       sop COMMAND --help\n"
               "       sop --version\n"
               "\n"
               "sop works with libsop databases: folders of stores, each an ordered\n"
               "B-tree of key/value items, changed in ACID transactions. Streaming\n"
               "stores keep values of any size (files) as sequences of chunks.\n"
               "\n"
               "Commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n"
               "Every command takes --redis HOST:PORT to coordinate through Redis\n"
               "(many hosts sharing the database folder; docs/locking.md), with\n"
               "--redis-user USER and --redis-password PASS (or SOP_REDIS_PASSWORD in\n"
               "the environment). Without it, processes on this host coordinate\n"
               "through the database's lock file. Every command also takes --passive\n"
               "PATH: the passive side of a replicated database, which must be the\n"
               "recorded one (without it the recorded one is used; 'sop init' sets\n"
               "it up).\n"
               "\n"
               "Options may come before or after the arguments; '--opt VALUE' and\n"
               "'--opt=VALUE' are the same, and '--' ends the options (for a key that\n"
               "starts with '-').\n"
               "\n"
               "Exit status: 0 success, 1 not found (key, store or database), 2 bad\n"
               "usage, 3 transaction conflict (after retries), 4 any other error.\n"
               "\n"
               "Example:\n"
               "  sop init ./shop && sop create ./shop orders\n"
               "  sop put ./shop orders 1001 paid && sop get ./shop orders 1001\n"
               "\n"
               "Run 'sop COMMAND --help' for a command's options and examples.\n");
}

static void print_command_help(const command *cmd)
{
    printf("usage: %s\n\n%s", cmd->synopsis, cmd->help);
}

/* ------------------------------------------------------------------------
 * Messages
 * ------------------------------------------------------------------------ */

/* True while a progress line (`sop load`, `sop scrub`) is unfinished on
 * stderr (a terminal); anything else written there erases it first. */
static bool progress_shown;

static void progress_erase(void)
{
    if (progress_shown)
        fputs("\r\033[K", stderr);
    progress_shown = false;
}

static void say(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* Prints one error line on stderr: "sop: " + the formatted text. */
static void say(const char *fmt, ...)
{
    char line[WHAT_MAX + SOP_ERR_MSG_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fflush(stdout);
    progress_erase();
    fprintf(stderr, "sop: %s\n", line);
}

static int usage_error(const command *cmd, const char *fmt, ...) PRINTF_LIKE(2, 3);

/* A bad command line: one line naming the problem and where to look. */
static int usage_error(const command *cmd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (cmd)
        say("%s: %s (try 'sop %s --help')", cmd->name, msg, cmd->name);
    else
        say("%s (try 'sop --help')", msg);
    return ST_USAGE;
}

/*
 * Writes bytes as a double-quoted, one-line string into out[cap] (control
 * bytes as \xNN, '"' and '\' escaped, UTF-8 as is, long input cut to
 * QUOTE_MAX bytes and "..."), so a key in a message never breaks its line.
 * Without quotes ('"' then as is): a key in a report, "videos/movie.mp4".
 */
static const char *quote_as(char *out, size_t cap, const void *p, size_t n, bool quotes)
{
    const unsigned char *s = p;
    size_t o = 0, shown = n < QUOTE_MAX ? n : QUOTE_MAX;
    if (quotes)
        out[o++] = '"';
    for (size_t i = 0; i < shown && o + 8 < cap; i++) {
        unsigned char c = s[i];
        if ((c == '"' && quotes) || c == '\\')
            o += (size_t)snprintf(out + o, cap - o, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    if (shown < n && o + 4 < cap)
        o += (size_t)snprintf(out + o, cap - o, "...");
    if (quotes)
        out[o++] = '"';
    out[o] = '\0';
    return out;
}

static const char *quote(char *out, size_t cap, const void *p, size_t n)
{
    return quote_as(out, cap, p, n, true);
}

#define QUOTED_CAP (QUOTE_MAX * 4 + 8)

/* Writes s with TAB, newline, CR and backslash escaped (\t \n \r \\), so a
 * free-text field keeps its line and column. */
static void put_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '\t':
            fputs("\\t", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

/* ------------------------------------------------------------------------
 * Command-line parsing
 * ------------------------------------------------------------------------ */

static bool is_help(const char *s)
{
    return strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0;
}

/* The idx-th word of a space-separated list, into out[cap]. */
static const char *nth_word(const char *list, int idx, char *out, size_t cap)
{
    const char *p = list;
    for (int i = 0; i < idx && p; i++) {
        p = strchr(p, ' ');
        if (p)
            p++;
    }
    if (p == NULL)
        return "?";
    size_t n = strcspn(p, " ");
    snprintf(out, cap, "%.*s", (int)n, p);
    return out;
}

static int count_words(const char *list)
{
    int n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ' ';
    return n;
}

/*
 * Parses argv[0..argc) (the words after the command name) against cmd:
 * options anywhere, "--opt VALUE" or "--opt=VALUE", "--" ends options, a lone
 * "-" is a positional argument. Returns ST_OK or ST_USAGE (message printed).
 */
static int parse_args(const command *cmd, int argc, char **argv, args *a)
{
    memset(a, 0, sizeof(*a));
    int want = count_words(cmd->params);
    bool options_ended = false;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (!options_ended && strcmp(s, "--") == 0) {
            options_ended = true;
            continue;
        }
        if (options_ended || s[0] != '-' || s[1] == '\0') {
            if (a->npos == want)
                return usage_error(cmd, "unexpected argument '%s'", s);
            a->pos[a->npos++] = s;
            continue;
        }
        if (s[1] != '-')
            return usage_error(cmd,
                               "unknown option '%s'; put -- before arguments that start "
                               "with '-'",
                               s);
        const char *name = s + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        int id = -1;
        for (int o = 0; o < OPT_COUNT_; o++) {
            if (((cmd->opts | OPT_GLOBAL) & OPT_BIT(o)) &&
                strlen(option_defs[o].name) == name_len &&
                memcmp(option_defs[o].name, name, name_len) == 0)
                id = o;
        }
        if (id < 0)
            return usage_error(cmd, "unknown option '--%.*s'", (int)name_len, name);
        if (!option_defs[id].has_value) {
            if (eq)
                return usage_error(cmd, "option '--%s' takes no value", option_defs[id].name);
            a->opt[id] = "";
        } else if (eq) {
            a->opt[id] = eq + 1;
        } else if (i + 1 < argc) {
            a->opt[id] = argv[++i];
        } else {
            return usage_error(cmd, "option '--%s' needs a value", option_defs[id].name);
        }
        if (option_defs[id].repeatable) {
            if (a->nrep == REPEAT_MAX)
                return usage_error(cmd, "more than %d repeated options", REPEAT_MAX);
            a->rep[a->nrep] = a->opt[id];
            a->rep_opt[a->nrep++] = (opt_id)id;
        }
    }
    if (a->npos < want) {
        char word[32];
        return usage_error(cmd, "missing argument %s",
                           nth_word(cmd->params, a->npos, word, sizeof(word)));
    }
    return ST_OK;
}

/* A whole decimal number lo..hi: no sign, no spaces, nothing after it. */
static bool parse_number(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (s[0] < '0' || s[0] > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* Reads option `id` as a number lo..hi into *out (left alone when absent). */
static int number_option(const command *cmd, const args *a, opt_id id, uint64_t lo, uint64_t hi,
                         uint64_t *out)
{
    const char *s = a->opt[id];
    if (s == NULL || parse_number(s, lo, hi, out))
        return ST_OK;
    if (hi == UINT64_MAX)
        return usage_error(cmd, "--%s wants a whole number of at least %llu, not '%s'",
                           option_defs[id].name, (unsigned long long)lo, s);
    return usage_error(cmd, "--%s wants a whole number %llu..%llu, not '%s'", option_defs[id].name,
                       (unsigned long long)lo, (unsigned long long)hi, s);
}

/* ------------------------------------------------------------------------
 * Sessions: one open database and the transactions run on it
 * ------------------------------------------------------------------------ */

typedef struct session {
    const char *dir;
    sop_db *db;
    sop_err err;
    char what[WHAT_MAX]; /* what failed, set by blame() */
    const char *note;    /* appended to the error line when not NULL */
    bool printed;        /* the current transaction has printed output */
    bool input_is_data;  /* SOP_INVALID comes from file data, not the command line */
    uint32_t txn_max_ms; /* max_duration_ms of each transaction; 0: the engine's default */
    /* A commit that conflicts when it cannot be retried (printed set: a
     * download wrote output, an upload read a pipe) is reported as
     * "<late_what>: <late_conflict>" when set. */
    const char *late_what, *late_conflict;
} session;

static sop_rc blame(session *s, sop_rc rc, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* Records what failed (for fail()) and passes rc on. */
static sop_rc blame(session *s, sop_rc rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->what, sizeof(s->what), fmt, ap);
    va_end(ap);
    return rc;
}

static int status_of(const session *s, sop_rc rc)
{
    switch (rc) {
    case SOP_OK:
        return ST_OK;
    case SOP_NOTFOUND:
        return ST_NOTFOUND;
    case SOP_CONFLICT:
        return ST_CONFLICT;
    case SOP_INVALID:
        /* The tool passes valid handles and options; SOP_INVALID means a
         * store name, key or setting the user typed was refused. */
        return s->input_is_data ? ST_ERROR : ST_USAGE;
    default:
        return ST_ERROR;
    }
}

/* Prints the error line for rc (what blame() recorded, then the engine's
 * message) and returns its exit status. */
static int fail(session *s, sop_rc rc)
{
    const char *msg = s->err.msg[0] ? s->err.msg : sop_rc_message(rc);
    int st = status_of(s, rc);
    if (st == ST_ERROR)
        say("%s: %s [%s]%s%s", s->what, msg, sop_rc_name(rc), s->note ? "; " : "",
            s->note ? s->note : "");
    else
        say("%s: %s%s%s", s->what, msg, s->note ? "; " : "", s->note ? s->note : "");
    return st;
}

/* How every command opens its database: the embedded coordination, or
 * Redis with --redis, and the passive path given with --passive (set up by
 * open_options). */
static sop_db_options db_options;
static char redis_host[256];

/*
 * --passive PATH (the engine checks it against the recorded one), and
 * --redis HOST:PORT (PORT defaults to 6379; [v6addr]:PORT for IPv6),
 * --redis-user USER, --redis-password PASS or, better (it does not show in
 * the process list), the environment variable SOP_REDIS_PASSWORD.
 */
static int open_options(const command *cmd, const args *a)
{
    sop_db_options_init(&db_options);
    if (a->opt[OPT_PASSIVE] && a->opt[OPT_PASSIVE][0] == '\0')
        return usage_error(cmd, "--passive wants a folder path, not ''");
    db_options.passive_path = a->opt[OPT_PASSIVE];
    const char *hp = a->opt[OPT_REDIS];
    if (hp == NULL) {
        if (a->opt[OPT_REDIS_USER] || a->opt[OPT_REDIS_PASSWORD])
            return usage_error(cmd, "--redis-user and --redis-password need --redis HOST:PORT");
        return ST_OK;
    }
    const char *colon = strrchr(hp, ':');
    const char *host = hp, *port = NULL;
    size_t hlen = strlen(hp);
    if (hp[0] == '[') {
        const char *close = strchr(hp, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':'))
            return usage_error(cmd, "--redis wants HOST:PORT, not '%s'", hp);
        host = hp + 1;
        hlen = (size_t)(close - host);
        port = close[1] == ':' ? close + 2 : NULL;
    } else if (colon) {
        hlen = (size_t)(colon - hp);
        port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof(redis_host))
        return usage_error(cmd, "--redis wants HOST:PORT, not '%s'", hp);
    memcpy(redis_host, host, hlen);
    redis_host[hlen] = '\0';
    db_options.coordination = SOP_COORD_REDIS;
    db_options.redis.host = redis_host;
    if (port) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(port, &end, 10);
        if (*port == '\0' || *end != '\0' || errno || v == 0 || v > 65535)
            return usage_error(cmd, "--redis: port must be 1..65535, not '%s'", port);
        db_options.redis.port = (uint16_t)v;
    }
    db_options.redis.user = a->opt[OPT_REDIS_USER];
    db_options.redis.password = a->opt[OPT_REDIS_PASSWORD];
    if (db_options.redis.password == NULL)
        db_options.redis.password = getenv("SOP_REDIS_PASSWORD");
    if (db_options.redis.user && db_options.redis.password == NULL)
        return usage_error(cmd, "--redis-user needs a password: --redis-password or "
                                "SOP_REDIS_PASSWORD (any one for a nopass user)");
    return ST_OK;
}

static int session_open(session *s, const char *dir)
{
    memset(s, 0, sizeof(*s));
    s->dir = dir;
    sop_rc rc = sop_db_open(dir, &db_options, &s->db, &s->err);
    if (rc != SOP_OK) {
        /* Every option passed was checked on the command line, so an open
         * refused with SOP_INVALID is about what is on disk (an erasure-
         * coding drive folder marked for another database or shard, a
         * --passive that is not the recorded passive path), not bad usage. */
        s->input_is_data = true;
        return fail(s, blame(s, rc, "open %s", dir));
    }
    return ST_OK;
}

static void session_close(session *s)
{
    sop_db_close(s->db);
    s->db = NULL;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A progress line on stderr (`sop load`, `sop scrub`): drawn only when
 * stderr is a terminal, at most every PROGRESS_EVERY_MS, and erased before
 * anything else is written there (progress_erase). */
typedef struct progress {
    bool on; /* stderr is a terminal */
    int64_t start_ms, shown_ms;
} progress;

static void progress_start(progress *p)
{
    p->on = isatty(STDERR_FILENO) == 1;
    p->start_ms = p->shown_ms = now_ms();
}

/* True when the line is due for a redraw (the clock then restarts). */
static bool progress_due(progress *p)
{
    if (!p->on)
        return false;
    int64_t now = now_ms();
    if (now - p->shown_ms < PROGRESS_EVERY_MS)
        return false;
    p->shown_ms = now;
    return true;
}

/* Seconds from progress_start to the last redraw. */
static double progress_secs(const progress *p)
{
    return (double)(p->shown_ms - p->start_ms) / 1000.0;
}

static void progress_draw(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* Replaces the progress line with the formatted text. */
static void progress_draw(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
    progress_shown = true;
}

/* The work of one transaction. It returns SOP_OK or the failing code after
 * blame(); it may run several times (invariant 3). */
typedef sop_rc (*txn_body)(session *s, sop_txn *t, void *arg);

/*
 * Runs body in a transaction of the given mode and commits it, retrying on
 * SOP_CONFLICT (invariant 3). Returns an exit status; on failure the error
 * line has been printed.
 */
static int session_txn(session *s, sop_txn_mode mode, txn_body body, void *arg)
{
    for (int attempt = 0;; attempt++) {
        sop_txn *t = NULL;
        s->printed = false;
        sop_err_clear(&s->err);
        sop_rc rc = sop_txn_begin(s->db, mode, s->txn_max_ms, &t, &s->err);
        if (rc != SOP_OK)
            return fail(s, blame(s, rc, "begin a transaction in %s", s->dir));
        rc = body(s, t, arg);
        if (rc == SOP_OK) {
            rc = sop_txn_commit(t, &s->err);
            if (rc == SOP_CONFLICT && s->printed && s->late_conflict) {
                snprintf(s->err.msg, sizeof(s->err.msg), "%s", s->late_conflict);
                blame(s, rc, "%s", s->late_what);
            } else if (rc != SOP_OK) {
                blame(s, rc, "commit in %s", s->dir);
            }
        }
        sop_txn_free(t); /* rolls back whatever did not commit */
        if (rc == SOP_OK)
            return ST_OK;
        if (rc != SOP_CONFLICT || s->printed)
            return fail(s, rc);
        if (attempt == CONFLICT_RETRIES) {
            size_t n = strlen(s->what);
            snprintf(s->what + n, sizeof(s->what) - n, " (%s; gave up after %d attempts)",
                     sop_rc_message(rc), attempt + 1);
            return fail(s, rc);
        }
        unsigned span = RETRY_SLEEP_MS_MAX - RETRY_SLEEP_MS_MIN;
        sleep_ms((RETRY_SLEEP_MS_MIN + (unsigned)rand() % span) * (unsigned)(attempt + 1));
    }
}

/* Opens a store in t, blaming the store for a failure. */
static sop_rc open_store(session *s, sop_txn *t, const char *name, sop_btree **bt)
{
    sop_rc rc = sop_store_open(t, name, bt, &s->err);
    if (rc != SOP_OK)
        return blame(s, rc, "open store %s", name);
    return SOP_OK;
}

/* Reads a store's info outside any transaction (for its options). */
static int store_info(session *s, const char *name, sop_store_info *info)
{
    sop_rc rc = sop_db_store_info(s->db, name, info, &s->err);
    if (rc != SOP_OK)
        return fail(s, blame(s, rc, "open store %s", name));
    return ST_OK;
}

/* store_info for put, get, del, scan and load, which work with items: a
 * streaming store's items are chunks under encoded (key, chunk) keys, which
 * only the stream calls may write (a raw key would break its listing) and
 * whose values may be huge, so it is refused (status 4). */
static int items_store_info(session *s, const char *name, sop_store_info *info)
{
    int st = store_info(s, name, info);
    if (st == ST_OK && info->options.streaming) {
        say("open store %s: %s is a streaming store (values kept as chunks): use 'sop upload', "
            "'sop download' and 'sop ls'",
            name, name);
        st = ST_ERROR;
    }
    return st;
}

static const char *placement_name(sop_value_placement p)
{
    switch (p) {
    case SOP_VALUES_IN_NODE:
        return "node";
    case SOP_VALUES_SEPARATE:
        return "separate";
    case SOP_VALUES_ACTIVE:
        return "active";
    }
    return "unknown";
}

/* Orders two keys as the stores do by default: memcmp, a prefix first. */
static int key_cmp(const void *a, size_t a_len, const void *b, size_t b_len)
{
    size_t n = a_len < b_len ? a_len : b_len;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return (a_len > b_len) - (a_len < b_len);
}

/* Writes key TAB value NEWLINE, raw; false (errno set) if stdout failed. */
static bool put_item(const sop_item *it)
{
    fwrite(it->key, 1, it->key_len, stdout);
    fputc('\t', stdout);
    fwrite(it->value, 1, it->value_len, stdout);
    fputc('\n', stdout);
    return !ferror(stdout);
}

/* ------------------------------------------------------------------------
 * init, create, drop
 * ------------------------------------------------------------------------ */

/* One --ec value cut up for its sop_ec_config: text is a copy of the value
 * with NULs put where '=', ':' and the ','s were, so the store name and the
 * paths point into it - or into abs[i] for a relative path made absolute. */
typedef struct ec_entry {
    char *text;
    char *abs[SOP_EC_SHARDS_MAX];
    const char *paths[SOP_EC_SHARDS_MAX];
} ec_entry;

static void ec_entry_free(ec_entry *e)
{
    free(e->text);
    for (unsigned i = 0; i < SOP_EC_SHARDS_MAX; i++)
        free(e->abs[i]);
}

/* A relative drive path joined to the current folder (without its leading
 * "./"s): the recorded paths must name the same folders for every process,
 * wherever it runs from. */
static int absolute_path(const char *path, char **out)
{
    char *cwd = getcwd(NULL, 0);
    if (cwd == NULL) {
        say("init: --ec path %s: the current folder: %s", path, strerror(errno));
        return ST_ERROR;
    }
    while (path[0] == '.' && path[1] == '/') {
        path += 2;
        while (path[0] == '/')
            path++;
    }
    bool root = strcmp(cwd, "/") == 0;
    int n = asprintf(out, "%s%s%s", cwd, root ? "" : "/", path[0] ? path : ".");
    free(cwd);
    if (n < 0) {
        *out = NULL;
        say("init: --ec path %s: out of memory", path);
        return ST_ERROR;
    }
    return ST_OK;
}

/* --ec [STORE=]K+P:PATH,PATH,... into c, its strings kept in e (docs/cli.md). */
static int ec_option(const command *cmd, const char *value, ec_entry *e, sop_ec_config *c)
{
    e->text = strdup(value);
    if (e->text == NULL) {
        say("init: --ec: out of memory");
        return ST_ERROR;
    }
    /* messages name the entry by what comes before the paths: "docs=2+1" */
    char *colon = strchr(e->text, ':');
    if (colon == NULL)
        return usage_error(cmd, "--ec wants [STORE=]K+P:PATH,PATH,..., not '%.*s%s'", QUOTE_MAX,
                           value, strlen(value) > QUOTE_MAX ? "..." : "");
    int head = (int)(colon - e->text);
    *colon = '\0';
    char *kp = e->text, *eq = strchr(kp, '=');
    if (eq) {
        *eq = '\0';
        if (kp[0] == '\0')
            return usage_error(cmd, "--ec %.*s: no store name before '='", head, value);
        c->store = kp;
        kp = eq + 1;
    }
    char *plus = strchr(kp, '+');
    uint64_t k = 0, p = 0;
    if (plus)
        *plus = '\0';
    if (plus == NULL || !parse_number(kp, 1, SOP_EC_SHARDS_MAX, &k) ||
        !parse_number(plus + 1, 1, SOP_EC_SHARDS_MAX, &p) || k + p > SOP_EC_SHARDS_MAX)
        return usage_error(cmd,
                           "--ec %.*s: K+P wants K data and P parity shards, each at least 1 "
                           "and K+P at most %u (like 2+1)",
                           head, value, SOP_EC_SHARDS_MAX);
    uint64_t want = k + p, got = 0;
    char *list = colon + 1;
    if (list[0] != '\0')
        for (const char *q = list; q; q = strchr(q + 1, ','))
            got++;
    if (got != want)
        return usage_error(cmd, "--ec %.*s wants %llu paths (one folder per drive), not %llu", head,
                           value, (unsigned long long)want, (unsigned long long)got);
    for (uint32_t i = 0; i < want; i++) {
        char *comma = strchr(list, ',');
        if (comma)
            *comma = '\0';
        if (list[0] == '\0')
            return usage_error(cmd, "--ec %.*s: path %u is empty", head, value, i + 1);
        e->paths[i] = list;
        if (list[0] != '/') {
            int st = absolute_path(list, &e->abs[i]);
            if (st != ST_OK)
                return st;
            e->paths[i] = e->abs[i];
        }
        list = comma ? comma + 1 : list + strlen(list);
    }
    c->data_shards = (uint32_t)k;
    c->parity_shards = (uint32_t)p;
    c->paths = e->paths;
    return ST_OK;
}

static int replication_info(session *s, sop_replication_info *r);

/* After `init --passive`: a passive side added to an existing database
 * starts stale; say so, and how to fill it (standard error: a note, not
 * data). */
static int init_passive_note(const char *dir)
{
    session s;
    int st = session_open(&s, dir);
    if (st != ST_OK)
        return st;
    sop_replication_info r;
    st = replication_info(&s, &r);
    for (int i = 0; st == ST_OK && r.enabled && i < 2; i++) {
        if (!r.stale[i])
            continue;
        fflush(stdout);
        fprintf(stderr, "the %s side %s is stale (%s); 'sop reinstate %s' fills it\n",
                i == r.active ? "active" : "passive", r.paths[i],
                r.reason[0] ? r.reason : "not reinstated", dir);
    }
    session_close(&s);
    return st;
}

static int run_init(const command *cmd, const args *a)
{
    uint64_t mod = 0;
    int st = number_option(cmd, a, OPT_HASH_MOD, 1, UINT32_MAX, &mod);
    if (st != ST_OK)
        return st;
    sop_db_options o;
    sop_db_options_init(&o);
    if (a->opt[OPT_HASH_MOD])
        o.registry_hash_mod = (uint32_t)mod;
    uint32_t nec = 0;
    for (int i = 0; i < a->nrep; i++)
        nec += a->rep_opt[i] == OPT_EC;
    if (a->opt[OPT_EC_REPAIR] && nec == 0)
        return usage_error(cmd, "--ec-repair needs --ec");
    ec_entry *ents = calloc(nec ? nec : 1, sizeof(*ents));
    sop_ec_config *ec = calloc(nec ? nec : 1, sizeof(*ec));
    uint32_t n = 0;
    if (ents == NULL || ec == NULL) {
        say("init %s: out of memory", a->pos[0]);
        st = ST_ERROR;
    }
    for (int i = 0; st == ST_OK && i < a->nrep; i++) {
        if (a->rep_opt[i] != OPT_EC)
            continue;
        ec[n].repair = a->opt[OPT_EC_REPAIR] != NULL;
        st = ec_option(cmd, a->rep[i], &ents[n], &ec[n]);
        n++;
    }
    if (st == ST_OK) {
        o.ec = ec;
        o.ec_count = nec;
        o.passive_path = a->opt[OPT_PASSIVE];
        session s;
        memset(&s, 0, sizeof(s));
        sop_rc rc = sop_db_init(a->pos[0], &o, &s.err);
        if (rc != SOP_OK)
            st = fail(&s, blame(&s, rc, "init %s", a->pos[0]));
        else if (o.passive_path)
            st = init_passive_note(a->pos[0]);
    }
    for (uint32_t i = 0; i < n; i++)
        ec_entry_free(&ents[i]);
    free(ents);
    free(ec);
    return st;
}

/* A store to create (with its options) or drop. */
typedef struct store_job {
    const char *store;
    sop_store_options opts; /* create only */
} store_job;

static sop_rc create_body(session *s, sop_txn *t, void *arg)
{
    store_job *j = arg;
    sop_btree *bt;
    sop_rc rc = sop_store_create(t, j->store, &j->opts, &bt, &s->err);
    if (rc != SOP_OK)
        return blame(s, rc, "create store %s", j->store);
    return SOP_OK;
}

/* A duration: digits then ms, s, m or h. */
static bool parse_duration(const char *s, size_t n, int64_t *ms)
{
    size_t d = 0;
    int64_t v = 0;
    while (d < n && d < 12 && s[d] >= '0' && s[d] <= '9')
        v = v * 10 + (s[d++] - '0');
    if (d == 0 || d == 12)
        return false;
    const char *u = s + d;
    size_t un = n - d;
    int64_t mult = un == 2 && memcmp(u, "ms", 2) == 0 ? 1
                   : un == 1 && *u == 's'             ? 1000
                   : un == 1 && *u == 'm'             ? 60000
                   : un == 1 && *u == 'h'             ? 3600000
                                                      : 0;
    if (mult == 0 || v == 0 || v > INT32_MAX / mult)
        return false;
    *ms = v * mult;
    return true;
}

/* --cache PART=DURATION[:sliding],... into c (docs/cli.md). */
static int cache_option(const command *cmd, const char *spec, sop_cache_config *c)
{
    for (const char *p = spec; *p;) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        if (eq == NULL)
            return usage_error(cmd, "--cache: '%.*s' is not PART=DURATION", (int)len, p);
        size_t pl = (size_t)(eq - p);
        const char *dur = eq + 1;
        size_t dl = len - pl - 1;
        bool sliding = false;
        if (dl > 8 && memcmp(dur + dl - 8, ":sliding", 8) == 0) {
            sliding = true;
            dl -= 8;
        }
        int64_t ms;
        if (!parse_duration(dur, dl, &ms))
            return usage_error(cmd,
                               "--cache: '%.*s' is not a duration like 500ms, 30s, 5m or 1h "
                               "(optionally followed by :sliding)",
                               (int)(len - pl - 1), dur);
        if (pl == 8 && memcmp(p, "registry", 8) == 0) {
            c->registry_ms = ms;
            c->registry_sliding = sliding;
        } else if (pl == 4 && memcmp(p, "node", 4) == 0) {
            c->node_ms = ms;
            c->node_sliding = sliding;
        } else if (pl == 5 && memcmp(p, "value", 5) == 0) {
            c->value_ms = ms;
            c->value_sliding = sliding;
        } else if (pl == 4 && memcmp(p, "info", 4) == 0) {
            c->store_info_ms = ms;
            c->store_info_sliding = sliding;
        } else {
            return usage_error(cmd, "--cache: no part '%.*s' (registry, node, value or info)",
                               (int)pl, p);
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return ST_OK;
}

static int run_create(const command *cmd, const args *a)
{
    store_job j = {.store = a->pos[1]};
    sop_store_options_init(&j.opts);
    uint64_t slots = SOP_SLOT_LENGTH_DEFAULT;
    int st =
        number_option(cmd, a, OPT_SLOT_LENGTH, SOP_SLOT_LENGTH_MIN, SOP_SLOT_LENGTH_MAX, &slots);
    if (st != ST_OK)
        return st;
    if (slots % 2 != 0)
        return usage_error(cmd, "--slot-length must be even, not %llu", (unsigned long long)slots);
    j.opts.slot_length = (uint32_t)slots;
    j.opts.is_unique = a->opt[OPT_DUPLICATES] == NULL;
    const char *place = a->opt[OPT_VALUES];
    if (place == NULL || strcmp(place, "node") == 0)
        j.opts.value_placement = SOP_VALUES_IN_NODE;
    else if (strcmp(place, "separate") == 0)
        j.opts.value_placement = SOP_VALUES_SEPARATE;
    else if (strcmp(place, "active") == 0)
        j.opts.value_placement = SOP_VALUES_ACTIVE;
    else
        return usage_error(cmd, "--values wants node, separate or active, not '%s'", place);
    j.opts.description = a->opt[OPT_DESCRIPTION];
    if (a->opt[OPT_CACHE]) {
        st = cache_option(cmd, a->opt[OPT_CACHE], &j.opts.cache);
        if (st != ST_OK)
            return st;
        if (j.opts.cache.value_ms > 0 && j.opts.value_placement == SOP_VALUES_IN_NODE)
            return usage_error(cmd, "--cache value=...: values live in the nodes here; cache "
                                    "nodes, or use --values separate or active");
        j.opts.globally_cached = j.opts.cache.value_ms > 0;
    }

    session s;
    st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    st = session_txn(&s, SOP_TXN_WRITE, create_body, &j);
    session_close(&s);
    return st;
}

static sop_rc drop_body(session *s, sop_txn *t, void *arg)
{
    const store_job *j = arg;
    sop_rc rc = sop_store_drop(t, j->store, &s->err);
    if (rc != SOP_OK)
        return blame(s, rc, "drop store %s", j->store);
    return SOP_OK;
}

static int run_drop(const command *cmd, const args *a)
{
    (void)cmd;
    session s;
    int st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    store_job j = {.store = a->pos[1]};
    st = session_txn(&s, SOP_TXN_WRITE, drop_body, &j);
    session_close(&s);
    return st;
}

/* ------------------------------------------------------------------------
 * stores, stat
 * ------------------------------------------------------------------------ */

static void print_store_line(void *ctx, const sop_store_info *info)
{
    (void)ctx;
    printf("%s\t%llu\t%u\t%s\t%s\t", info->name, (unsigned long long)info->count,
           info->options.slot_length, info->options.is_unique ? "unique" : "duplicates",
           placement_name(info->options.value_placement));
    put_escaped(stdout, info->description);
    putchar('\n');
}

static int run_stores(const command *cmd, const args *a)
{
    (void)cmd;
    session s;
    int st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    sop_rc rc = sop_db_stores(s.db, print_store_line, NULL, &s.err);
    if (rc != SOP_OK)
        st = fail(&s, blame(&s, rc, "list the stores of %s", a->pos[0]));
    session_close(&s);
    return st;
}

typedef struct stat_job {
    const char *store;
    sop_btree_stats stats;
} stat_job;

static sop_rc stat_body(session *s, sop_txn *t, void *arg)
{
    stat_job *j = arg;
    sop_btree *bt;
    sop_rc rc = open_store(s, t, j->store, &bt);
    if (rc != SOP_OK)
        return rc;
    rc = sop_btree_stats_get(bt, &j->stats, &s->err);
    if (rc != SOP_OK)
        return blame(s, rc, "statistics of store %s", j->store);
    return SOP_OK;
}

/* "2024-05-01 12:00:00.123 UTC" for Unix milliseconds; "-" for 0. */
static const char *format_time(int64_t ms, char *out, size_t cap)
{
    if (ms <= 0) {
        snprintf(out, cap, "-");
        return out;
    }
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(out, cap, "%lld ms", (long long)ms);
        return out;
    }
    char day[32];
    strftime(day, sizeof(day), "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03d UTC", day, (int)(ms % 1000));
    return out;
}

static int run_stat(const command *cmd, const args *a)
{
    (void)cmd;
    session s;
    int st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    stat_job j = {.store = a->pos[1]};
    sop_store_info info;
    st = store_info(&s, j.store, &info);
    if (st == ST_OK)
        st = session_txn(&s, SOP_TXN_READ, stat_body, &j);
    session_close(&s);
    if (st != ST_OK)
        return st;
    char created[64], updated[64];
    printf("store:        %s\n", info.name);
    printf("description:  ");
    put_escaped(stdout, info.description[0] ? info.description : "-");
    printf("\ncount:        %llu\n", (unsigned long long)j.stats.count);
    printf("nodes:        %llu\n", (unsigned long long)j.stats.nodes);
    printf("leaves:       %llu\n", (unsigned long long)j.stats.leaves);
    printf("height:       %u\n", j.stats.height);
    printf("fill:         %.1f%%\n", j.stats.fill * 100.0);
    printf("slot length:  %u\n", info.options.slot_length);
    printf("keys:         %s\n", info.options.is_unique ? "unique" : "duplicates");
    printf("values:       %s\n", placement_name(info.options.value_placement));
    printf("created:      %s\n", format_time(info.created_ms, created, sizeof(created)));
    printf("updated:      %s\n", format_time(info.updated_ms, updated, sizeof(updated)));
    return ST_OK;
}

/* ------------------------------------------------------------------------
 * put, get, del
 * ------------------------------------------------------------------------ */

typedef struct key_job {
    const char *store;
    const char *key;
    const char *value; /* put only */
    bool unique;       /* put only: the store holds one item per key */
    char *found;       /* get only: a copy of the value, malloc'd */
    size_t found_len;
} key_job;

static sop_rc put_body(session *s, sop_txn *t, void *arg)
{
    key_job *j = arg;
    sop_btree *bt;
    sop_rc rc = open_store(s, t, j->store, &bt);
    if (rc != SOP_OK)
        return rc;
    size_t klen = strlen(j->key), vlen = strlen(j->value);
    if (j->unique)
        rc = sop_btree_upsert(bt, j->key, klen, j->value, vlen, NULL, &s->err);
    else
        rc = sop_btree_add(bt, j->key, klen, j->value, vlen, NULL, &s->err);
    if (rc != SOP_OK) {
        char q[QUOTED_CAP];
        return blame(s, rc, "put %s in %s", quote(q, sizeof(q), j->key, klen), j->store);
    }
    return SOP_OK;
}

static int run_put(const command *cmd, const args *a)
{
    (void)cmd;
    key_job j = {.store = a->pos[1], .key = a->pos[2], .value = a->pos[3]};
    session s;
    int st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    sop_store_info info;
    st = items_store_info(&s, j.store, &info);
    if (st == ST_OK) {
        j.unique = info.options.is_unique;
        st = session_txn(&s, SOP_TXN_WRITE, put_body, &j);
    }
    session_close(&s);
    return st;
}

/* SOP_NOTFOUND for a key gets a plain message rather than the engine's:
 * "get "k" from s: no such key". */
static sop_rc key_not_found(session *s, const key_job *j, const char *verb, const char *prep)
{
    char q[QUOTED_CAP];
    snprintf(s->err.msg, sizeof(s->err.msg), "no such key");
    return blame(s, SOP_NOTFOUND, "%s %s %s %s", verb, quote(q, sizeof(q), j->key, strlen(j->key)),
                 prep, j->store);
}

static sop_rc get_body(session *s, sop_txn *t, void *arg)
{
    key_job *j = arg;
    sop_btree *bt;
    sop_rc rc = open_store(s, t, j->store, &bt);
    if (rc != SOP_OK)
        return rc;
    sop_item it;
    rc = sop_btree_get(bt, j->key, strlen(j->key), &it, &s->err);
    if (rc == SOP_NOTFOUND)
        return key_not_found(s, j, "get", "from");
    if (rc != SOP_OK) {
        char q[QUOTED_CAP];
        return blame(s, rc, "get %s from %s", quote(q, sizeof(q), j->key, strlen(j->key)),
                     j->store);
    }
    /* it.value lives until the tree changes or the transaction ends: copy it
     * and print after the commit, so a retried attempt prints nothing twice */
    free(j->found);
    j->found = malloc(it.value_len ? it.value_len : 1);
    if (j->found == NULL) {
        snprintf(s->err.msg, sizeof(s->err.msg), "out of memory for a %zu-byte value",
                 it.value_len);
        return blame(s, SOP_NOMEM, "get");
    }
    if (it.value_len)
        memcpy(j->found, it.value, it.value_len);
    j->found_len = it.value_len;
    return SOP_OK;
}

static int run_get(const command *cmd, const args *a)
{
    (void)cmd;
    key_job j = {.store = a->pos[1], .key = a->pos[2]};
    session s;
    int st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    sop_store_info info;
    st = items_store_info(&s, j.store, &info);
    if (st == ST_OK)
        st = session_txn(&s, SOP_TXN_READ, get_body, &j);
    session_close(&s);
    if (st == ST_OK) {
        fwrite(j.found, 1, j.found_len, stdout);
        putchar('\n');
    }
    free(j.found);
    return st;
}

static sop_rc del_body(session *s, sop_txn *t, void *arg)
{
    key_job *j = arg;
    sop_btree *bt;
    sop_rc rc = open_store(s, t, j->store, &bt);
    if (rc != SOP_OK)
        return rc;
    rc = sop_btree_remove(bt, j->key, strlen(j->key), &s->err);
    if (rc == SOP_NOTFOUND)
        return key_not_found(s, j, "delete", "in");
    if (rc != SOP_OK) {
        char q[QUOTED_CAP];
        return blame(s, rc, "delete %s in %s", quote(q, sizeof(q), j->key, strlen(j->key)),
                     j->store);
    }
    return SOP_OK;
}

static int run_del(const command *cmd, const args *a)
{
    (void)cmd;
    key_job j = {.store = a->pos[1], .key = a->pos[2]};
    session s;
    int st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    sop_store_info info;
    st = items_store_info(&s, j.store, &info);
    if (st == ST_OK)
        st = session_txn(&s, SOP_TXN_WRITE, del_body, &j);
    session_close(&s);
    return st;
}

/* ------------------------------------------------------------------------
 * scan
 * ------------------------------------------------------------------------ */

typedef struct scan_job {
    const char *store;
    const char *from, *to; /* inclusive bounds, NULL for none */
    bool reverse;
    uint64_t limit;
} scan_job;

/* Moves c to where the scan starts; SOP_NOTFOUND when nothing is there. */
static sop_rc scan_start(session *s, const scan_job *j, sop_cursor *c)
{
    sop_rc rc;
    if (!j->reverse)
        rc = j->from ? sop_cursor_find(c, j->from, strlen(j->from), &s->err)
                     : sop_cursor_first(c, &s->err);
    else
        rc = j->to ? sop_cursor_find_last(c, j->to, strlen(j->to), &s->err)
                   : sop_cursor_last(c, &s->err);
    /* find/find_last report an inexact match as SOP_NOTFOUND, cursor on the
     * nearest item in the scan's direction */
    if (rc == SOP_NOTFOUND && (j->from || j->to) && sop_cursor_on_item(c))
        rc = SOP_OK;
    return rc;
}

static sop_rc scan_body(session *s, sop_txn *t, void *arg)
{
    const scan_job *j = arg;
    sop_btree *bt;
    sop_rc rc = open_store(s, t, j->store, &bt);
    if (rc != SOP_OK)
        return rc;
    sop_cursor *c;
    rc = sop_cursor_open(bt, &c, &s->err);
    if (rc != SOP_OK)
        return blame(s, rc, "open a cursor on %s", j->store);
    const char *stop = j->reverse ? j->from : j->to;
    size_t stop_len = stop ? strlen(stop) : 0;
    uint64_t n = 0;
    int write_errno = 0;
    for (rc = scan_start(s, j, c); rc == SOP_OK && n < j->limit;
         rc = j->reverse ? sop_cursor_prev(c, &s->err) : sop_cursor_next(c, &s->err)) {
        sop_item it;
        rc = sop_cursor_item(c, &it, &s->err);
        if (rc != SOP_OK)
            break;
        if (stop) {
            int cmp = key_cmp(it.key, it.key_len, stop, stop_len);
            if (j->reverse ? cmp < 0 : cmp > 0)
                break;
        }
        s->printed = true;
        if (!put_item(&it)) {
            write_errno = errno ? errno : EIO;
            break;
        }
        n++;
    }
    sop_cursor_close(c);
    if (write_errno != 0) {
        snprintf(s->err.msg, sizeof(s->err.msg), "%s", strerror(write_errno));
        return blame(s, SOP_IO, "write the scan of %s to standard output", j->store);
    }
    if (rc != SOP_OK && rc != SOP_NOTFOUND)
        return blame(s, rc, "scan %s", j->store);
    return SOP_OK;
}

static int run_scan(const command *cmd, const args *a)
{
    scan_job j = {.store = a->pos[1],
                  .from = a->opt[OPT_FROM],
                  .to = a->opt[OPT_TO],
                  .reverse = a->opt[OPT_REVERSE] != NULL,
                  .limit = UINT64_MAX};
    int st = number_option(cmd, a, OPT_LIMIT, 0, UINT64_MAX, &j.limit);
    if (st != ST_OK)
        return st;
    if ((j.from && j.from[0] == '\0') || (j.to && j.to[0] == '\0'))
        return usage_error(cmd, "--%s wants a key of at least one byte",
                           j.from && !j.from[0] ? "from" : "to");
    session s;
    st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    s.txn_max_ms = LONG_TXN_MS; /* a scan of a big store may take a while */
    sop_store_info info;
    st = items_store_info(&s, j.store, &info);
    if (st == ST_OK)
        st = session_txn(&s, SOP_TXN_READ, scan_body, &j);
    session_close(&s);
    return st;
}

/* ------------------------------------------------------------------------
 * load
 * ------------------------------------------------------------------------ */

/* One input line: key and value as offsets into the batch's bytes. */
typedef struct load_line {
    size_t key_off, key_len, val_len; /* the value follows the key and its TAB */
    uint64_t lineno;
} load_line;

/* The lines of one transaction, kept so a conflict can replay them. */
typedef struct load_batch {
    char *bytes;
    size_t len, cap;
    load_line *lines;
    size_t n, lines_cap;
} load_batch;

typedef struct load_job {
    const char *store;
    const char *source; /* the file name, or "standard input" */
    bool unique;
    load_batch batch;
    uint64_t loaded; /* items committed */
    progress progress;
} load_job;

static bool grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t cap2 = *cap ? *cap : 64;
    while (cap2 < need)
        cap2 *= 2;
    void *p2 = realloc(*p, cap2 * elem);
    if (p2 == NULL)
        return false;
    *p = p2;
    *cap = cap2;
    return true;
}

/* Appends a line whose key is line[0..tab) and value line(tab..len);
 * line[tab] is the TAB. */
static bool batch_add(load_batch *b, const char *line, size_t len, size_t tab, uint64_t lineno)
{
    assert(tab < len && line[tab] == '\t');
    void *lines = b->lines, *bytes = b->bytes;
    bool ok = grow(&lines, &b->lines_cap, b->n + 1, sizeof(load_line)) &&
              grow(&bytes, &b->cap, b->len + len, 1);
    b->lines = lines;
    b->bytes = bytes;
    if (!ok)
        return false;
    b->lines[b->n++] =
        (load_line){.key_off = b->len, .key_len = tab, .val_len = len - tab - 1, .lineno = lineno};
    memcpy(b->bytes + b->len, line, len);
    b->len += len;
    return true;
}

static sop_rc load_body(session *s, sop_txn *t, void *arg)
{
    load_job *j = arg;
    sop_btree *bt;
    sop_rc rc = open_store(s, t, j->store, &bt);
    if (rc != SOP_OK)
        return rc;
    for (size_t i = 0; i < j->batch.n; i++) {
        const load_line *l = &j->batch.lines[i];
        const char *key = j->batch.bytes + l->key_off;
        const char *val = key + l->key_len + 1;
        if (j->unique)
            rc = sop_btree_upsert(bt, key, l->key_len, val, l->val_len, NULL, &s->err);
        else
            rc = sop_btree_add(bt, key, l->key_len, val, l->val_len, NULL, &s->err);
        if (rc != SOP_OK) {
            char q[QUOTED_CAP];
            return blame(s, rc, "load %s line %llu: put %s in %s", j->source,
                         (unsigned long long)l->lineno, quote(q, sizeof(q), key, l->key_len),
                         j->store);
        }
    }
    return SOP_OK;
}

/* Redraws "loading: N lines, R/s" on a terminal, at most every PROGRESS_EVERY_MS. */
static void show_progress(load_job *j, uint64_t lines)
{
    if (!progress_due(&j->progress))
        return;
    double secs = progress_secs(&j->progress);
    double rate = secs > 0 ? (double)lines / secs : 0.0;
    progress_draw("loading: %llu lines, %.0f/s", (unsigned long long)lines, rate);
}

/* "lines 1-N were loaded", for an error that stops a load after line N. */
static const char *loaded_note(char *out, size_t cap, uint64_t last_line)
{
    if (last_line == 0)
        snprintf(out, cap, "nothing was loaded");
    else if (last_line == 1)
        snprintf(out, cap, "line 1 was loaded");
    else
        snprintf(out, cap, "lines 1-%llu were loaded", (unsigned long long)last_line);
    return out;
}

/* Commits the batch (if any) and empties it. */
static int load_flush(session *s, load_job *j)
{
    if (j->batch.n == 0)
        return ST_OK;
    char note[96];
    s->note = loaded_note(note, sizeof(note), j->batch.lines[0].lineno - 1);
    int st = session_txn(s, SOP_TXN_WRITE, load_body, j);
    s->note = NULL;
    if (st != ST_OK)
        return st;
    j->loaded += j->batch.n;
    j->batch.n = 0;
    j->batch.len = 0;
    return ST_OK;
}

/* Reads the input in batches of `batch_size` lines and commits each. */
static int load_stream(session *s, load_job *j, FILE *in, uint64_t batch_size)
{
    char *line = NULL;
    size_t line_cap = 0;
    uint64_t lineno = 0;
    int st = ST_OK;
    ssize_t got;
    while (st == ST_OK && (got = getline(&line, &line_cap, in)) >= 0) {
        size_t len = (size_t)got;
        lineno++;
        if (len > 0 && line[len - 1] == '\n')
            len--;
        const char *tab = memchr(line, '\t', len);
        if (tab == NULL) {
            st = load_flush(s, j);
            if (st == ST_OK) {
                char note[96];
                say("load %s: line %llu has no TAB between key and value; %s", j->source,
                    (unsigned long long)lineno, loaded_note(note, sizeof(note), lineno - 1));
                st = ST_ERROR;
            }
            break;
        }
        if (!batch_add(&j->batch, line, len, (size_t)(tab - line), lineno)) {
            say("load %s: out of memory at line %llu", j->source, (unsigned long long)lineno);
            st = ST_ERROR;
            break;
        }
        if (j->batch.n >= batch_size)
            st = load_flush(s, j);
        if ((lineno & 1023) == 0)
            show_progress(j, lineno);
    }
    if (st == ST_OK && ferror(in)) {
        say("load %s: read error: %s", j->source, strerror(errno));
        st = ST_ERROR;
    }
    if (st == ST_OK)
        st = load_flush(s, j);
    free(line);
    if (st == ST_OK) {
        progress_erase();
        fprintf(stderr, "loaded %llu items\n", (unsigned long long)j->loaded);
    }
    return st;
}

static int run_load(const command *cmd, const args *a)
{
    uint64_t batch = LOAD_BATCH_DEFAULT;
    int st = number_option(cmd, a, OPT_BATCH, 1, LOAD_BATCH_MAX, &batch);
    if (st != ST_OK)
        return st;
    const char *path = a->pos[2];
    bool is_stdin = strcmp(path, "-") == 0;
    FILE *in = is_stdin ? stdin : fopen(path, "r");
    if (in == NULL) {
        say("open input %s: %s", path, strerror(errno));
        return ST_ERROR;
    }
    load_job j = {.store = a->pos[1], .source = is_stdin ? "standard input" : path};
    progress_start(&j.progress);
    session s;
    st = session_open(&s, a->pos[0]);
    if (st == ST_OK) {
        s.input_is_data = true;
        s.txn_max_ms = LONG_TXN_MS; /* --batch may be large */
        sop_store_info info;
        st = items_store_info(&s, j.store, &info);
        if (st == ST_OK) {
            j.unique = info.options.is_unique;
            st = load_stream(&s, &j, in, batch);
        }
        session_close(&s);
    }
    free(j.batch.bytes);
    free(j.batch.lines);
    if (!is_stdin)
        fclose(in);
    return st;
}

/* ------------------------------------------------------------------------
 * check
 * ------------------------------------------------------------------------ */

static const char *plural(uint64_t n)
{
    return n == 1 ? "" : "s";
}

static void print_problem(void *ctx, const char *msg)
{
    uint64_t *problems = ctx;
    (*problems)++;
    printf("%s\n", msg);
}

static int run_check(const command *cmd, const args *a)
{
    (void)cmd;
    session s;
    int st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    sop_check_report r;
    memset(&r, 0, sizeof(r));
    uint64_t problems = 0;
    sop_rc rc = sop_db_check(s.db, print_problem, &problems, &r, &s.err);
    if (rc == SOP_OK || rc == SOP_CORRUPT) {
        if (r.problems > problems)
            problems = r.problems;
        printf("checked %llu store%s, %llu item%s, %llu node%s, %llu blob%s: ",
               (unsigned long long)r.stores, plural(r.stores), (unsigned long long)r.items,
               plural(r.items), (unsigned long long)r.nodes, plural(r.nodes),
               (unsigned long long)r.blobs, plural(r.blobs));
        if (rc == SOP_OK && problems == 0)
            printf("clean\n");
        else
            printf("%llu problem%s\n", (unsigned long long)problems, plural(problems));
    }
    if (rc == SOP_OK && problems > 0)
        rc = SOP_CORRUPT; /* problems reported but "clean" returned: trust the problems */
    if (rc == SOP_CORRUPT && problems > 0)
        snprintf(s.err.msg, sizeof(s.err.msg), "%llu problem%s found (listed on standard output)",
                 (unsigned long long)problems, plural(problems));
    st = rc == SOP_OK ? ST_OK : ST_ERROR;
    if (rc != SOP_OK)
        fail(&s, blame(&s, rc, "check %s", a->pos[0]));
    session_close(&s);
    return st;
}

/* ------------------------------------------------------------------------
 * scrub
 * ------------------------------------------------------------------------ */

typedef struct scrub_job {
    progress progress;
    bool flush_lines; /* stdout shares the terminal with the progress line */
} scrub_job;

/* Redraws "scrubbing STORE: N/N blobs" on a terminal. */
static void scrub_progress(void *ctx, const char *store, uint64_t done, uint64_t total)
{
    scrub_job *j = ctx;
    if (progress_due(&j->progress))
        progress_draw("scrubbing %s: %llu/%llu blobs", store, (unsigned long long)done,
                      (unsigned long long)total);
}

static void scrub_line(void *ctx, const char *msg)
{
    const scrub_job *j = ctx;
    if (j->flush_lines)
        progress_erase();
    printf("%s\n", msg);
    if (j->flush_lines)
        fflush(stdout);
}

static int run_scrub(const command *cmd, const args *a)
{
    (void)cmd;
    session s;
    int st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    scrub_job j;
    progress_start(&j.progress);
    j.flush_lines = j.progress.on && isatty(STDOUT_FILENO) == 1;
    sop_scrub_report r;
    memset(&r, 0, sizeof(r));
    sop_rc rc =
        sop_db_scrub(s.db, a->opt[OPT_REPAIR] != NULL, scrub_progress, scrub_line, &j, &r, &s.err);
    progress_erase();
    if (rc == SOP_OK || rc == SOP_CORRUPT)
        printf("scrubbed %llu store%s, %llu blob%s, %llu shard%s: %llu bad, %llu repaired, %llu "
               "lost, %llu orphan blob%s\n",
               (unsigned long long)r.stores, plural(r.stores), (unsigned long long)r.blobs,
               plural(r.blobs), (unsigned long long)r.shards, plural(r.shards),
               (unsigned long long)r.bad_shards, (unsigned long long)r.repaired_shards,
               (unsigned long long)r.lost_blobs, (unsigned long long)r.orphan_blobs,
               plural(r.orphan_blobs));
    if (rc == SOP_CORRUPT && r.lost_blobs > 0)
        snprintf(s.err.msg, sizeof(s.err.msg),
                 "%llu blob%s cannot be read (listed on standard output)",
                 (unsigned long long)r.lost_blobs, plural(r.lost_blobs));
    else if (rc == SOP_CORRUPT)
        snprintf(s.err.msg, sizeof(s.err.msg), "problems found (listed on standard output)");
    st = rc == SOP_OK ? ST_OK : ST_ERROR;
    if (rc != SOP_OK)
        fail(&s, blame(&s, rc, "scrub %s", a->pos[0]));
    session_close(&s);
    return st;
}

/* ------------------------------------------------------------------------
 * status
 *
 * One section per topic: a "[name]" line, then its lines; an empty line
 * between sections. Within a section, "field: value" lines (aligned as
 * `sop stat` does) or, for a table, TAB-separated lines. Readers look
 * sections up by name, so sections can be added without breaking them;
 * the format of an existing one is kept (docs/cli.md, "status").
 * ------------------------------------------------------------------------ */

static void status_section(const char *name)
{
    static bool started;
    printf("%s[%s]\n", started ? "\n" : "", name);
    started = true;
}

static void status_database(const session *s)
{
    status_section("database");
    char *abs = realpath(s->dir, NULL);
    printf("path:         ");
    put_escaped(stdout, abs ? abs : s->dir);
    free(abs);
    printf("\nhash modulus: %u\n", sop_db_hash_mod(s->db));
    if (db_options.coordination == SOP_COORD_REDIS) {
        bool v6 = strchr(db_options.redis.host, ':') != NULL;
        printf("coordination: redis %s%s%s:%u\n", v6 ? "[" : "", db_options.redis.host,
               v6 ? "]" : "", (unsigned)db_options.redis.port);
    } else {
        printf("coordination: local\n");
    }
}

static const char *drive_state(sop_rc state)
{
    switch (state) {
    case SOP_OK:
        return "ok";
    case SOP_NOTFOUND:
        return "missing"; /* the folder or its marker */
    case SOP_INVALID:
        return "wrong-database"; /* marked for another database or shard */
    default:
        return "error"; /* unreadable or damaged marker */
    }
}

/* entry, K+P, repair, shard index, path, state, detail */
static void print_drive(void *ctx, const sop_ec_drive *d)
{
    uint64_t *n = ctx;
    (*n)++;
    printf("%s\t%u+%u\t%s\t%u\t", d->store ? d->store : "(default)", d->data_shards,
           d->parity_shards, d->repair ? "repair" : "no-repair", d->index);
    put_escaped(stdout, d->path);
    printf("\t%s\t", drive_state(d->state));
    put_escaped(stdout, d->state == SOP_OK || d->detail[0] == '\0' ? "-" : d->detail);
    putchar('\n');
}

static int status_erasure_coding(session *s)
{
    status_section("erasure coding");
    uint64_t n = 0;
    sop_rc rc = sop_db_ec_drives(s->db, print_drive, &n, &s->err);
    if (rc != SOP_OK)
        return fail(s, blame(s, rc, "list the erasure-coding drives of %s", s->dir));
    if (n == 0)
        printf("none\n");
    return ST_OK;
}

/* The replication state as this process sees it (r->enabled false: not
 * replicated). */
static int replication_info(session *s, sop_replication_info *r)
{
    sop_rc rc = sop_db_replication(s->db, r, &s->err);
    if (rc != SOP_OK)
        return fail(s, blame(s, rc, "read the replication state of %s", s->dir));
    return ST_OK;
}

/* Side i's folder: absolute (side 0 is the database folder as given). */
static void put_side_path(const sop_replication_info *r, int i)
{
    char *abs = realpath(r->paths[i], NULL);
    put_escaped(stdout, abs ? abs : r->paths[i]);
    free(abs);
}

/* "live", or "stale (WHY)": the reason is that of the last side to go
 * stale, the only one stale in practice. */
static void put_side_state(const sop_replication_info *r, int i)
{
    if (!r->stale[i]) {
        printf("live");
        return;
    }
    printf("stale");
    if (r->reason[0]) {
        printf(" (");
        put_escaped(stdout, r->reason);
        putchar(')');
    }
}

static int status_replication(session *s)
{
    status_section("replication");
    sop_replication_info r;
    int st = replication_info(s, &r);
    if (st != ST_OK)
        return st;
    if (!r.enabled) {
        printf("replication:  none\n");
        return ST_OK;
    }
    char changed[64];
    printf("replication:  active/passive\nactive:       ");
    put_side_path(&r, r.active);
    for (int i = 0; i < 2; i++) {
        printf("\nside %d:       ", i);
        put_side_path(&r, i);
        printf("\nside %d state: ", i);
        put_side_state(&r, i);
    }
    printf("\ngeneration:   %llu\n", (unsigned long long)r.generation);
    printf("changed:      %s\n", format_time(r.changed_ms, changed, sizeof(changed)));
    return ST_OK;
}

static int run_status(const command *cmd, const args *a)
{
    (void)cmd;
    session s;
    int st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    status_database(&s);
    st = status_erasure_coding(&s);
    if (st == ST_OK)
        st = status_replication(&s);
    session_close(&s);
    return st;
}

/* ------------------------------------------------------------------------
 * failover, reinstate
 * ------------------------------------------------------------------------ */

/* Opens dir and reads its replication state; a database that is not
 * replicated is an error (status 4) naming how to set it up. */
static int replicated_open(session *s, const char *verb, const char *dir, sop_replication_info *r)
{
    int st = session_open(s, dir);
    if (st != ST_OK)
        return st;
    /* SOP_INVALID from failover or reinstate is about the database's
     * state (a stale side), not the command line */
    s->input_is_data = true;
    st = replication_info(s, r);
    if (st == ST_OK && !r->enabled) {
        say("%s %s: %s is not replicated (set it up with 'sop init %s --passive PATH')", verb, dir,
            dir, dir);
        st = ST_ERROR;
    }
    if (st != ST_OK)
        session_close(s);
    return st;
}

static int run_failover(const command *cmd, const args *a)
{
    (void)cmd;
    const char *dir = a->pos[0];
    session s;
    sop_replication_info r;
    int st = replicated_open(&s, "failover", dir, &r);
    if (st != ST_OK)
        return st;
    int other = 1 - r.active;
    if (r.stale[other]) {
        /* the engine refuses it too; this says what to do about it */
        say("failover %s: refused: the passive side %s is stale (%s); run 'sop reinstate %s' first",
            dir, r.paths[other], r.reason[0] ? r.reason : "not reinstated", dir);
        st = ST_ERROR;
    } else {
        sop_rc rc = sop_db_failover(s.db, &s.err);
        if (rc != SOP_OK)
            st = fail(&s, blame(&s, rc, "failover %s", dir));
    }
    if (st == ST_OK)
        st = replication_info(&s, &r);
    if (st == ST_OK) {
        printf("failed over: the active side is now ");
        put_side_path(&r, r.active);
        putchar('\n');
    }
    session_close(&s);
    return st;
}

/* "1.3 MiB" (or "512 bytes"). */
static const char *format_bytes(uint64_t n, char *out, size_t cap)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (n < 1024) {
        snprintf(out, cap, "%llu byte%s", (unsigned long long)n, plural(n));
        return out;
    }
    double v = (double)n / 1024.0;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    snprintf(out, cap, "%.1f %s", v, units[u]);
    return out;
}

typedef struct reinstate_job {
    progress progress;
    const char *target; /* the stale side's path */
    uint64_t bytes, files;
} reinstate_job;

/* Keeps the counts and redraws "reinstating PATH: N files, SIZE". */
static void reinstate_progress(void *ctx, uint64_t bytes, uint64_t files)
{
    reinstate_job *j = ctx;
    j->bytes = bytes;
    j->files = files;
    if (progress_due(&j->progress)) {
        char size[32];
        progress_draw("reinstating %s: %llu file%s, %s", j->target, (unsigned long long)files,
                      plural(files), format_bytes(bytes, size, sizeof(size)));
    }
}

static int run_reinstate(const command *cmd, const args *a)
{
    (void)cmd;
    const char *dir = a->pos[0];
    session s;
    sop_replication_info before, after;
    int st = replicated_open(&s, "reinstate", dir, &before);
    if (st != ST_OK)
        return st;
    int target = before.stale[0] ? 0 : before.stale[1] ? 1 : -1;
    reinstate_job j = {.target = target >= 0 ? before.paths[target] : before.paths[1]};
    progress_start(&j.progress);
    sop_rc rc = sop_db_reinstate(s.db, reinstate_progress, &j, &s.err);
    progress_erase();
    if (rc != SOP_OK)
        st = fail(&s, blame(&s, rc, "reinstate %s", dir));
    if (st == ST_OK)
        st = replication_info(&s, &after);
    for (int i = 0; st == ST_OK && i < 2; i++) {
        if (after.stale[i]) { /* another process marked it stale since */
            say("reinstate %s: %s is stale again (%s)", dir, after.paths[i],
                after.reason[0] ? after.reason : "no reason recorded");
            st = ST_ERROR;
        }
    }
    if (st == ST_OK && target < 0 && j.files == 0) {
        printf("nothing to reinstate: both sides are live\n");
    } else if (st == ST_OK) {
        if (target < 0) /* went stale between the two looks */
            target = 1 - after.active;
        char size[32];
        printf("reinstated ");
        put_side_path(&after, target);
        printf(" from ");
        put_side_path(&after, after.active);
        printf(": %llu file%s, %s; both sides are live\n", (unsigned long long)j.files,
               plural(j.files), format_bytes(j.bytes, size, sizeof(size)));
    }
    session_close(&s);
    return st;
}

/* ------------------------------------------------------------------------
 * upload, download, ls: streaming stores
 *
 * A streaming store keeps each value as a sequence of chunks (sop.h,
 * "Streaming stores"). upload and download hold one chunk in memory at a
 * time, whatever the value's size, and do their work in one transaction:
 * an upload's value appears whole at its commit or not at all, and a
 * download's commit tells whether the value changed under it.
 * ------------------------------------------------------------------------ */

/* --chunk-size: digits and an optional K, M or G (powers of 1024), 1 byte
 * to SOP_VALUE_SEPARATE_MAX (the largest chunk). */
static int chunk_size_option(const command *cmd, const args *a, size_t *out)
{
    const char *v = a->opt[OPT_CHUNK_SIZE];
    *out = CHUNK_SIZE_DEFAULT;
    if (v == NULL)
        return ST_OK;
    bool ok = v[0] >= '0' && v[0] <= '9';
    char *end = NULL;
    unsigned long long n = 0, mult = 1;
    errno = 0;
    if (ok)
        n = strtoull(v, &end, 10);
    if (ok && errno == 0) {
        switch (*end) {
        case 'K':
        case 'k':
            mult = 1ull << 10;
            end++;
            break;
        case 'M':
        case 'm':
            mult = 1ull << 20;
            end++;
            break;
        case 'G':
        case 'g':
            mult = 1ull << 30;
            end++;
            break;
        default:
            break;
        }
    }
    if (!ok || errno != 0 || *end != '\0')
        return usage_error(cmd,
                           "--chunk-size wants a size like 65536, 512K, 16M or 1G (K, M and G are "
                           "powers of 1024), not '%s'",
                           v);
    if (n == 0)
        return usage_error(cmd, "--chunk-size must be at least 1 byte, not '%s'", v);
    if (n > SOP_VALUE_SEPARATE_MAX / mult)
        return usage_error(cmd, "--chunk-size %s is over the largest chunk, 1G (%u bytes)", v,
                           SOP_VALUE_SEPARATE_MAX);
    *out = (size_t)(n * mult);
    return ST_OK;
}

/*
 * Before the transaction: `store` must be a streaming store, so that a
 * store of key/value items gets a message saying what it is (status 4).
 * missing_ok: a missing store is fine (upload creates it). what: the "what
 * failed" part of the error line.
 */
static int streaming_store_check(session *s, const char *what, const char *store, bool missing_ok)
{
    sop_store_info info;
    sop_rc rc = sop_db_store_info(s->db, store, &info, &s->err);
    if (rc == SOP_NOTFOUND && missing_ok)
        return ST_OK;
    if (rc != SOP_OK)
        return fail(s, blame(s, rc, "open store %s", store));
    if (!info.options.streaming) {
        say("%s: %s is not a streaming store (it holds key/value items: see 'sop get' and 'sop "
            "scan'; 'sop upload' makes streaming stores)",
            what, store);
        return ST_ERROR;
    }
    return ST_OK;
}

/* Opens the streaming store `store` in t. */
static sop_rc open_stream(session *s, sop_txn *t, const char *store, sop_stream **out)
{
    sop_rc rc = sop_stream_open(t, store, out, &s->err);
    if (rc != SOP_OK)
        return blame(s, rc, "open streaming store %s", store);
    return SOP_OK;
}

#define LABEL_CAP (QUOTED_CAP + 160) /* "STORE/KEY", or an error line's what */

/*
 * The progress line of an upload or download, on a terminal only:
 * "VERB LABEL: 32.0 MiB of 64.0 MiB (50%), 110.5 MiB/s" (no "of" when total
 * is UINT64_MAX: unknown; extra, if not NULL, goes before the rate). It is
 * redrawn at most every PROGRESS_EVERY_MS; `last` draws the final state
 * whatever the clock says and ends the line with a newline.
 */
static void transfer_progress(progress *p, const char *verb, const char *label, uint64_t done,
                              uint64_t total, const char *extra, bool last)
{
    if (last ? !p->on : !progress_due(p))
        return;
    if (last)
        p->shown_ms = now_ms();
    char line[256], a[32], b[32];
    int n =
        snprintf(line, sizeof(line), "%s %s: %s", verb, label, format_bytes(done, a, sizeof(a)));
    if (total != UINT64_MAX && n >= 0 && (size_t)n < sizeof(line)) {
        unsigned pct = total == 0 ? 100 : done >= total ? 100 : (unsigned)(done * 100 / total);
        n += snprintf(line + n, sizeof(line) - (size_t)n, " of %s (%u%%)",
                      format_bytes(total, b, sizeof(b)), pct);
    }
    if (extra && n >= 0 && (size_t)n < sizeof(line))
        n += snprintf(line + n, sizeof(line) - (size_t)n, ", %s", extra);
    double secs = progress_secs(p);
    if (secs > 0 && n >= 0 && (size_t)n < sizeof(line))
        snprintf(line + n, sizeof(line) - (size_t)n, ", %s/s",
                 format_bytes((uint64_t)((double)done / secs), a, sizeof(a)));
    progress_draw("%s", line);
    if (last) {
        fputc('\n', stderr);
        progress_shown = false;
    }
}

typedef struct upload_job {
    const char *store, *key;
    const char *source; /* the file name, or "standard input" */
    int fd;
    off_t start;  /* where the input starts, to read it again after a conflict; -1: a pipe */
    bool started; /* an attempt has begun reading the input */
    char *buf;    /* one chunk */
    size_t chunk;
    uint64_t size;          /* of the input when known (a regular file), else UINT64_MAX */
    uint64_t bytes, chunks; /* stored (chunks: the value's count after the writer closed) */
    char what[LABEL_CAP];   /* upload "KEY" to STORE */
    char label[LABEL_CAP];  /* STORE/KEY */
    progress progress;
} upload_job;

/* Fills j->buf with the next chunk: *got bytes, fewer than a chunk only at
 * the end of the input (*eof). Returns 0 or an errno. */
static int read_chunk_in(upload_job *j, size_t *got, bool *eof)
{
    *got = 0;
    *eof = false;
    while (*got < j->chunk) {
        ssize_t n = read(j->fd, j->buf + *got, j->chunk - *got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (n == 0) {
            *eof = true;
            break;
        }
        *got += (size_t)n;
        transfer_progress(&j->progress, "uploading", j->label, j->bytes + *got, j->size, NULL,
                          false);
    }
    return 0;
}

static sop_rc upload_body(session *s, sop_txn *t, void *arg)
{
    upload_job *j = arg;
    if (j->started && lseek(j->fd, j->start, SEEK_SET) < 0) { /* a retry: read it again */
        snprintf(s->err.msg, sizeof(s->err.msg), "%s", strerror(errno));
        return blame(s, SOP_IO, "%s: rewind %s for another attempt", j->what, j->source);
    }
    j->started = true;
    if (j->start < 0)
        s->printed = true; /* a pipe cannot be read twice: no retry (invariant 3) */
    j->bytes = j->chunks = 0;
    sop_stream *st;
    sop_rc rc = sop_stream_open(t, j->store, &st, &s->err);
    if (rc == SOP_NOTFOUND) {
        rc = sop_stream_create(t, j->store, NULL, &st, &s->err);
        if (rc != SOP_OK)
            return blame(s, rc, "create streaming store %s", j->store);
    } else if (rc != SOP_OK) {
        return blame(s, rc, "open streaming store %s", j->store);
    }
    sop_stream_writer *w;
    rc = sop_stream_writer_open(st, j->key, strlen(j->key), SOP_STREAM_UPSERT, &w, &s->err);
    if (rc != SOP_OK) {
        sop_stream_close(st);
        return blame(s, rc, "%s", j->what);
    }
    for (bool eof = false; !eof;) {
        size_t got;
        int e = read_chunk_in(j, &got, &eof);
        if (e != 0) {
            snprintf(s->err.msg, sizeof(s->err.msg), "%s", strerror(e));
            rc = blame(s, SOP_IO, "%s: read %s", j->what, j->source);
            break;
        }
        if (got == 0) /* the end, right after a full chunk (or an empty input) */
            break;
        rc = sop_stream_write(w, j->buf, got, &s->err);
        if (rc != SOP_OK) {
            blame(s, rc, "%s: write chunk %llu", j->what, (unsigned long long)j->chunks);
            break;
        }
        j->bytes += got;
        j->chunks++;
    }
    if (rc == SOP_OK) {
        /* an empty input leaves one empty chunk: the value exists, empty */
        rc = sop_stream_writer_close(w, &j->chunks, &s->err);
        if (rc != SOP_OK)
            blame(s, rc, "%s: finish the value", j->what);
    }
    sop_stream_close(st); /* drops a writer left open: the transaction rolls back */
    return rc;
}

static int run_upload(const command *cmd, const args *a)
{
    size_t chunk;
    int st = chunk_size_option(cmd, a, &chunk);
    if (st != ST_OK)
        return st;
    upload_job j = {.store = a->pos[1], .key = a->pos[2], .chunk = chunk};
    if (j.key[0] == '\0')
        return usage_error(cmd, "KEY must be at least one byte");
    char q[QUOTED_CAP];
    snprintf(j.what, sizeof(j.what), "upload %s to %s", quote(q, sizeof(q), j.key, strlen(j.key)),
             j.store);
    snprintf(j.label, sizeof(j.label), "%s/%s", j.store,
             quote_as(q, sizeof(q), j.key, strlen(j.key), false));
    const char *path = a->pos[3];
    bool is_stdin = strcmp(path, "-") == 0;
    j.source = is_stdin ? "standard input" : path;
    j.fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (j.fd < 0) {
        say("open input %s: %s", path, strerror(errno));
        return ST_ERROR;
    }
    j.size = UINT64_MAX;
    j.start = -1;
    struct stat sb;
    if (fstat(j.fd, &sb) == 0 && S_ISREG(sb.st_mode)) {
        off_t at = lseek(j.fd, 0, SEEK_CUR); /* stdin may be a file read part way */
        if (at >= 0) {
            j.start = at;
            j.size = sb.st_size > at ? (uint64_t)(sb.st_size - at) : 0;
        }
    }
    j.buf = malloc(chunk);
    if (j.buf == NULL) {
        say("%s: out of memory for a %zu-byte chunk", j.what, chunk);
        st = ST_ERROR;
    }
    session s;
    if (st == ST_OK)
        st = session_open(&s, a->pos[0]);
    if (j.buf != NULL && st == ST_OK) {
        st = streaming_store_check(&s, j.what, j.store, true);
        if (st == ST_OK) {
            s.txn_max_ms = LONG_TXN_MS; /* one transaction for the whole value */
            s.late_what = j.what;
            s.late_conflict = "another transaction changed the store meanwhile, and the input "
                              "cannot be read again for a retry: run the upload again";
            progress_start(&j.progress);
            st = session_txn(&s, SOP_TXN_WRITE, upload_body, &j);
        }
        session_close(&s);
    }
    if (st == ST_OK) {
        transfer_progress(&j.progress, "uploading", j.label, j.bytes, j.size, NULL, true);
        printf("uploaded %llu byte%s in %llu chunk%s to %s\n", (unsigned long long)j.bytes,
               plural(j.bytes), (unsigned long long)j.chunks, plural(j.chunks), j.label);
    }
    free(j.buf);
    if (!is_stdin)
        close(j.fd);
    return st;
}

typedef struct download_job {
    const char *store, *key;
    bool from_given; /* --from-chunk */
    uint64_t from;
    sop_stream_entry entry; /* the value's chunks and bytes (sop_stream_stat) */
    uint64_t bytes;         /* written */
    uint64_t index;         /* of the chunk being read */
    uint64_t written;       /* index of the chunk last written */
    char what[LABEL_CAP];   /* download "KEY" from STORE */
    char label[LABEL_CAP];  /* STORE/KEY */
    progress progress;
} download_job;

/* Writes all of p[0..n) to fd, through short writes and signals. Returns 0
 * or an errno (EPIPE: the reader went away; SIGPIPE is ignored). */
static int write_all(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static void download_progress(download_job *j, bool last)
{
    if (!j->from_given) {
        transfer_progress(&j->progress, "downloading", j->label, j->bytes, j->entry.bytes, NULL,
                          last);
        return;
    }
    /* from a chunk on, the bytes to come are not known: show the chunks */
    char extra[96];
    snprintf(extra, sizeof(extra), "chunk %llu of %llu-%llu", (unsigned long long)j->written,
             (unsigned long long)j->entry.first_chunk, (unsigned long long)j->entry.last_chunk);
    transfer_progress(&j->progress, "downloading", j->label, j->bytes, UINT64_MAX, extra, last);
}

/* Positions st on the first chunk to write; a missing key or chunk is
 * SOP_NOTFOUND with a message saying which. */
static sop_rc download_position(session *s, download_job *j, sop_stream *st)
{
    size_t klen = strlen(j->key);
    sop_rc rc = sop_stream_stat(st, j->key, klen, &j->entry, &s->err);
    if (rc == SOP_NOTFOUND) {
        snprintf(s->err.msg, sizeof(s->err.msg), "no such key");
        return blame(s, rc, "%s", j->what);
    }
    if (rc != SOP_OK)
        return blame(s, rc, "%s", j->what);
    if (!j->from_given)
        rc = sop_stream_find(st, j->key, klen, &s->err);
    else
        rc = sop_stream_find_chunk(st, j->key, klen, j->from, &s->err);
    if (rc == SOP_NOTFOUND && j->from_given) {
        const sop_stream_entry *e = &j->entry;
        snprintf(s->err.msg, sizeof(s->err.msg),
                 "no chunk %llu (the value has %llu chunk%s, %llu-%llu)",
                 (unsigned long long)j->from, (unsigned long long)e->chunks, plural(e->chunks),
                 (unsigned long long)e->first_chunk, (unsigned long long)e->last_chunk);
        return blame(s, rc, "%s", j->what);
    }
    if (rc != SOP_OK)
        return blame(s, rc, "%s", j->what);
    return SOP_OK;
}

#define CHANGED_UNDER_DOWNLOAD                                                                     \
    "the value changed while it was being written: the output is not consistent (download it "     \
    "again)"

static sop_rc download_body(session *s, sop_txn *t, void *arg)
{
    download_job *j = arg;
    j->bytes = 0;
    sop_stream *st;
    sop_rc rc = open_stream(s, t, j->store, &st);
    if (rc != SOP_OK)
        return rc;
    sop_stream_reader *r = NULL;
    rc = download_position(s, j, st);
    j->index = j->from_given ? j->from : j->entry.first_chunk;
    if (rc == SOP_OK) {
        rc = sop_stream_reader_open(st, &r, &s->err);
        if (rc != SOP_OK)
            blame(s, rc, "%s", j->what);
    }
    while (rc == SOP_OK) {
        const void *data;
        size_t len;
        rc = sop_stream_read_chunk(r, &data, &len, &j->index, &s->err);
        if (rc == SOP_NOTFOUND) { /* the end of the value */
            sop_err_clear(&s->err);
            rc = SOP_OK;
            break;
        }
        if (rc == SOP_CONFLICT && s->printed) { /* a later chunk changed: say what it means */
            snprintf(s->err.msg, sizeof(s->err.msg), "%s", CHANGED_UNDER_DOWNLOAD);
            blame(s, rc, "%s", j->what);
            break;
        }
        if (rc != SOP_OK) {
            blame(s, rc, "%s: read chunk %llu", j->what, (unsigned long long)j->index);
            break;
        }
        s->printed = true; /* stdout has (part of) the value: no retry */
        int e = write_all(STDOUT_FILENO, data, len);
        if (e != 0) {
            snprintf(s->err.msg, sizeof(s->err.msg), "%s%s", strerror(e),
                     e == EPIPE ? " (the reader of the output went away)" : "");
            rc = blame(s, SOP_IO, "%s: write to standard output", j->what);
            break;
        }
        j->bytes += len;
        j->written = j->index++; /* the next one, unless chunks were removed (gaps) */
        download_progress(j, false);
    }
    sop_stream_reader_close(r);
    sop_stream_close(st);
    return rc;
}

static int run_download(const command *cmd, const args *a)
{
    download_job j = {.store = a->pos[1], .key = a->pos[2]};
    int st = number_option(cmd, a, OPT_FROM_CHUNK, 0, INT64_MAX, &j.from);
    if (st != ST_OK)
        return st;
    j.from_given = a->opt[OPT_FROM_CHUNK] != NULL;
    if (j.key[0] == '\0')
        return usage_error(cmd, "KEY must be at least one byte");
    char q[QUOTED_CAP];
    snprintf(j.what, sizeof(j.what), "download %s from %s",
             quote(q, sizeof(q), j.key, strlen(j.key)), j.store);
    snprintf(j.label, sizeof(j.label), "%s/%s", j.store,
             quote_as(q, sizeof(q), j.key, strlen(j.key), false));
    signal(SIGPIPE, SIG_IGN); /* a reader gone is EPIPE, and one error line */
    session s;
    st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    st = streaming_store_check(&s, j.what, j.store, false);
    if (st == ST_OK) {
        s.txn_max_ms = LONG_TXN_MS;
        s.late_what = j.what;
        s.late_conflict = CHANGED_UNDER_DOWNLOAD;
        progress_start(&j.progress);
        st = session_txn(&s, SOP_TXN_READ, download_body, &j);
    }
    session_close(&s);
    if (st == ST_OK)
        download_progress(&j, true);
    return st;
}

typedef struct ls_job {
    session *s;
    const char *store;
    int write_errno;
} ls_job;

/* KEY TAB CHUNKS TAB BYTES; the key raw, as 'sop scan' writes keys. */
static bool ls_line(void *ctx, const sop_stream_entry *e)
{
    ls_job *j = ctx;
    j->s->printed = true;
    fwrite(e->key, 1, e->key_len, stdout);
    printf("\t%llu\t%llu\n", (unsigned long long)e->chunks, (unsigned long long)e->bytes);
    if (ferror(stdout)) {
        j->write_errno = errno ? errno : EIO;
        return false;
    }
    return true;
}

static sop_rc ls_body(session *s, sop_txn *t, void *arg)
{
    ls_job *j = arg;
    sop_stream *st;
    sop_rc rc = open_stream(s, t, j->store, &st);
    if (rc != SOP_OK)
        return rc;
    rc = sop_stream_list(st, NULL, 0, ls_line, j, &s->err);
    sop_stream_close(st);
    if (j->write_errno != 0) {
        snprintf(s->err.msg, sizeof(s->err.msg), "%s", strerror(j->write_errno));
        return blame(s, SOP_IO, "write the keys of %s to standard output", j->store);
    }
    if (rc != SOP_OK)
        return blame(s, rc, "list streaming store %s", j->store);
    return SOP_OK;
}

static int run_ls(const command *cmd, const args *a)
{
    (void)cmd;
    ls_job j = {.store = a->pos[1]};
    session s;
    int st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    j.s = &s;
    char what[LABEL_CAP];
    snprintf(what, sizeof(what), "ls %s", j.store);
    st = streaming_store_check(&s, what, j.store, false);
    if (st == ST_OK) {
        s.txn_max_ms = LONG_TXN_MS; /* a store of many keys */
        st = session_txn(&s, SOP_TXN_READ, ls_body, &j);
    }
    session_close(&s);
    return st;
}

/* ------------------------------------------------------------------------
 * recover
 * ------------------------------------------------------------------------ */

static int run_recover(const command *cmd, const args *a)
{
    (void)cmd;
    session s;
    int st = session_open(&s, a->pos[0]);
    if (st != ST_OK)
        return st;
    sop_rc rc = sop_db_recover(s.db, &s.err);
    if (rc != SOP_OK)
        st = fail(&s, blame(&s, rc, "recover %s", a->pos[0]));
    session_close(&s);
    return st;
}

/* ------------------------------------------------------------------------
 * main
 * ------------------------------------------------------------------------ */

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* Finishes stdout; a failed write (a full disk) is an error. */
static int finish_output(int st)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (st != ST_OK)
            return st; /* the command failed and said so already: one line only */
        say("write to standard output: %s", strerror(errno));
        return ST_ERROR;
    }
    return st;
}

int main(int argc, char **argv)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    if (argc < 2)
        return usage_error(NULL, "no command given");
    const char *name = argv[1];
    if (is_help(name)) {
        print_main_help(stdout);
        return finish_output(ST_OK);
    }
    if (strcmp(name, "--version") == 0) {
        printf("sop %s\n", SOP_CLI_VERSION);
        return finish_output(ST_OK);
    }
    const command *cmd = find_command(name);
    if (cmd == NULL)
        return usage_error(NULL, "unknown command '%s'", name);
    for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (is_help(argv[i])) {
            print_command_help(cmd);
            return finish_output(ST_OK);
        }
    }
    args a;
    int st = parse_args(cmd, argc - 2, argv + 2, &a);
    if (st == ST_OK)
        st = open_options(cmd, &a);
    if (st != ST_OK)
        return st;
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
    return finish_output(cmd->run(cmd, &a));
}

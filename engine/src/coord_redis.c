/*
 * coord_redis.c - the Redis coordination backend (coord.h is the contract):
 * a lock is a key holding its owner's token with a TTL, the L2 cache is
 * plain keys with TTLs, and the epoch is a token key folded with the
 * server's run_id. One synchronous hiredis connection per handle.
 *
 *   try_lock  SET key token NX PX ttl             OK: taken, nil: LOCKED
 *   extend    EVAL compare-and-pexpire            1: OK, 0: CONFLICT
 *   unlock    EVAL compare-and-delete             1: OK, 0: CONFLICT
 *   get       GET key / GETEX key PX slide        nil: NOTFOUND
 *   set       SET key value PX ttl
 *   del       DEL k1 .. kn                        one round trip
 *   epoch     GET <ns>epoch (SET NX a random one if missing), run_id
 *
 * Invariants:
 *  1. Every wait is bounded by timeout_ms: the connect, and each send and
 *     receive of a command (SO_SNDTIMEO/SO_RCVTIMEO). A command makes at
 *     most one new connection (connect, AUTH, SELECT, INFO: four round
 *     trips) and is sent at most twice; no call sends more than two
 *     commands (try_lock after a retry: SET NX, then the extend script).
 *  2. A command that got no reply (I/O error, EOF, timeout) leaves the
 *     connection in an unknown state - a late reply would be read as the
 *     answer to the next command - so its context is freed at once and never
 *     used again.
 *  3. Only a connection made before the call is retried: if its command
 *     gets no reply, the call reconnects once and sends it once more. Every
 *     command here is idempotent for that: SET NX with the same token
 *     (after a retry a nil reply is checked against our own token, since
 *     the first attempt may have taken the lock and lost its reply), the
 *     token-comparing scripts, GET/GETEX, SET, DEL. A connection made in the
 *     call that fails is not retried: the server is down. What stays
 *     ambiguous: an unlock whose first reply was lost answers SOP_CONFLICT
 *     (the key is gone either way), and a call that ends SOP_UNREACHABLE may
 *     still have run on the server - a lock taken that way expires by TTL.
 *  4. Nothing succeeds unless the server said so. No reply after the retry,
 *     an error reply (NOAUTH, WRONGPASS, LOADING, READONLY, OOM...) or a
 *     reply of an unexpected type is SOP_UNREACHABLE with the server's words
 *     and host:port; SOP_NOMEM only for our own or hiredis' allocations.
 *  5. SIGPIPE from writing to a connection the server closed is blocked
 *     around every exchange and consumed if it was raised: the library never
 *     kills the process it is loaded into.
 *  6. A handle inherited through fork() never shares its parent's socket:
 *     the child drops the context (closing only its copy of the descriptor)
 *     and reconnects.
 *  7. epoch = FNV-1a(token of <ns>epoch || run_id of the server that
 *     answered). FLUSHALL/FLUSHDB remove the token; a restart (even one that
 *     reloads the token from disk, possibly without the newest locks) or a
 *     failover changes run_id. The run_id is read at every connect, and a
 *     restart always breaks the connection, so it is never stale.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "coord.h"
#include "err.h"
#include "mem.h"
#include "uuid.h"

#define DEFAULT_HOST       "127.0.0.1"
#define DEFAULT_PORT       6379
#define DEFAULT_TIMEOUT_MS 2000
#define RUN_ID_MAX         64 /* Redis's run_id is 40 hex digits */
#define EPOCH_KEY          "epoch"

/* KEYS[1] = lock, ARGV[1] = token, ARGV[2] = ttl_ms */
#define EXTEND_SCRIPT                                                                              \
    "if redis.call('get', KEYS[1]) == ARGV[1] then "                                               \
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
/* KEYS[1] = lock, ARGV[1] = token */
#define UNLOCK_SCRIPT                                                                              \
    "if redis.call('get', KEYS[1]) == ARGV[1] then "                                               \
    "return redis.call('del', KEYS[1]) end return 0"

typedef struct rcoord {
    sop__coord c;      /* first: a sop__coord * is an rcoord * */
    redisContext *ctx; /* NULL: no live connection (invariant 2) */
    pid_t pid;         /* the process that made ctx (invariant 6) */
    char *host;
    char *user;     /* NULL: the default user */
    char *password; /* NULL: no AUTH */
    uint16_t port;
    uint32_t database;
    uint32_t timeout_ms;
    char run_id[RUN_ID_MAX + 1]; /* of the server ctx is connected to */
} rcoord;

/* ---- Failure messages ---- */

/* "redis host:port: <fmt>" */
static sop_rc fail(const rcoord *r, sop_err *err, sop_rc rc, const char *fmt, ...)
    SOP__PRINTF(4, 5);

static sop_rc fail(const rcoord *r, sop_err *err, sop_rc rc, const char *fmt, ...)
{
    if (err == NULL)
        return rc;
    char what[SOP_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (n < 0)
        what[0] = '\0';
    return sop__err_set(err, rc, 0, "redis %s:%u: %s", r->host, (unsigned)r->port, what);
}

/* A reply of the wrong type (invariant 4). */
static sop_rc unexpected(const rcoord *r, const char *verb, const char *key, const redisReply *rep,
                         sop_err *err)
{
    return fail(r, err, SOP_UNREACHABLE, "%s %s: unexpected reply (type %d)", verb, key ? key : "",
                rep->type);
}

static bool is_status(const redisReply *rep, const char *s)
{
    return rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, s) == 0;
}

/* ---- SIGPIPE (invariant 5) ---- */

typedef struct sigpipe_guard {
    sigset_t old;
    bool was_pending; /* raised before we blocked it: not ours to consume */
} sigpipe_guard;

static void sigpipe_block(sigpipe_guard *g)
{
    int saved = errno;
    sigset_t pipe_set, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &g->old);
    g->was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
    errno = saved;
}

/* Consumes a SIGPIPE our writes raised (a call that succeeded may have
 * raised one too, on the connection it then replaced), then unblocks. */
static void sigpipe_unblock(const sigpipe_guard *g)
{
    int saved = errno;
    sigset_t pipe_set, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    if (!g->was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
    errno = saved;
}

/* ---- The connection ---- */

static struct timeval timeval_ms(uint32_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static void drop(rcoord *r)
{
    if (r->ctx) {
        redisFree(r->ctx);
        r->ctx = NULL;
    }
}

/* Why r->ctx gave no reply: a timeout, or hiredis' description. */
static void dead_reason(const rcoord *r, int saved_errno, char *buf, size_t size)
{
    const redisContext *ctx = r->ctx;
    bool timed_out = false;
#ifdef REDIS_ERR_TIMEOUT /* hiredis >= 1.0 */
    timed_out = ctx->err == REDIS_ERR_TIMEOUT;
#endif
    if (ctx->err == REDIS_ERR_IO &&
        (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == ETIMEDOUT ||
         strcmp(ctx->errstr, strerror(EAGAIN)) == 0 ||
         strcmp(ctx->errstr, strerror(ETIMEDOUT)) == 0))
        timed_out = true;
    if (timed_out)
        snprintf(buf, size, "timed out after %" PRIu32 " ms", r->timeout_ms);
    else
        snprintf(buf, size, "%s", ctx->errstr[0] ? ctx->errstr : "connection lost");
}

/*
 * Sends one command on the live connection and reads its reply. A reply of
 * any type (error replies included) is SOP_OK with *out set. No reply is
 * SOP_UNREACHABLE (SOP_NOMEM if hiredis ran out of memory), the connection
 * dropped (invariant 2) and err saying "<verb> <key>: <why>".
 */
static sop_rc exchange(rcoord *r, const char *verb, const char *key, int argc, const char **argv,
                       const size_t *lens, redisReply **out, sop_err *err)
{
    errno = 0;
    redisReply *rep = redisCommandArgv(r->ctx, argc, argv, lens);
    int saved = errno;
    if (rep) {
        *out = rep;
        return SOP_OK;
    }
    sop_rc rc = r->ctx->err == REDIS_ERR_OOM ? SOP_NOMEM : SOP_UNREACHABLE;
    char why[160];
    dead_reason(r, saved, why, sizeof(why));
    drop(r);
    return sop__err_set(err, rc, 0, "%s%s%s: %s", verb, key ? " " : "", key ? key : "", why);
}

/* The run_id line of INFO server: 1..RUN_ID_MAX hex digits. */
static bool parse_run_id(const char *info, size_t len, char out[RUN_ID_MAX + 1])
{
    static const char tag[] = "\nrun_id:";
    const char *p = memmem(info, len, tag, sizeof(tag) - 1);
    if (p == NULL)
        return false;
    p += sizeof(tag) - 1;
    const char *end = info + len;
    size_t n = 0;
    while (p + n < end && p[n] != '\r' && p[n] != '\n') {
        char ch = p[n];
        bool hex = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
        if (!hex || n == RUN_ID_MAX)
            return false;
        n++;
    }
    if (n == 0)
        return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

/* One command during connect: a reply that is not an error, or a failure
 * ("<verb>: <why>"; the connection dropped). */
static sop_rc setup_command(rcoord *r, const char *verb, int argc, const char **argv,
                            const size_t *lens, redisReply **out, sop_err *err)
{
    redisReply *rep;
    SOP__TRY(exchange(r, verb, NULL, argc, argv, lens, &rep, err));
    if (rep->type == REDIS_REPLY_ERROR) {
        sop__err_set(err, SOP_UNREACHABLE, 0, "%s: %s",
                     strcmp(verb, "AUTH") == 0 ? "authentication failed" : verb, rep->str);
        freeReplyObject(rep);
        drop(r);
        return SOP_UNREACHABLE;
    }
    *out = rep;
    return SOP_OK;
}

/*
 * Connects, authenticates, selects the database and reads the server's
 * run_id. On failure there is no connection and err says why, without the
 * "redis host:port" prefix.
 */
static sop_rc connect_server(rcoord *r, sop_err *err)
{
    struct timeval tv = timeval_ms(r->timeout_ms);
    redisContext *ctx = redisConnectWithTimeout(r->host, r->port, tv);
    if (ctx == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "connect: out of memory (hiredis)");
    r->ctx = ctx;
    r->pid = getpid();
    if (ctx->err) {
        char why[160];
        dead_reason(r, ctx->err == REDIS_ERR_IO ? errno : 0, why, sizeof(why));
        drop(r);
        return sop__err_set(err, SOP_UNREACHABLE, 0, "connect: %s", why);
    }
    if (redisSetTimeout(ctx, tv) != REDIS_OK) {
        sop__err_set(err, SOP_UNREACHABLE, 0, "connect: setting the timeout: %s", ctx->errstr);
        drop(r);
        return SOP_UNREACHABLE;
    }
    redisReply *rep;
    if (r->password) {
        const char *argv[3] = {"AUTH", r->user, r->password};
        size_t lens[3] = {4, r->user ? strlen(r->user) : 0, strlen(r->password)};
        if (r->user == NULL) {
            argv[1] = r->password;
            lens[1] = lens[2];
        }
        SOP__TRY(setup_command(r, "AUTH", r->user ? 3 : 2, argv, lens, &rep, err));
        bool ok = is_status(rep, "OK");
        freeReplyObject(rep);
        if (!ok) {
            drop(r);
            return sop__err_set(err, SOP_UNREACHABLE, 0, "authentication failed: unexpected reply");
        }
    }
    if (r->database != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%" PRIu32, r->database);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, strlen(db)};
        SOP__TRY(setup_command(r, "SELECT", 2, argv, lens, &rep, err));
        bool ok = is_status(rep, "OK");
        freeReplyObject(rep);
        if (!ok) {
            drop(r);
            return sop__err_set(err, SOP_UNREACHABLE, 0, "SELECT %s: unexpected reply", db);
        }
    }
    const char *argv[2] = {"INFO", "server"};
    size_t lens[2] = {4, 6};
    SOP__TRY(setup_command(r, "INFO server", 2, argv, lens, &rep, err));
    bool ok = rep->type == REDIS_REPLY_STRING && parse_run_id(rep->str, rep->len, r->run_id);
    freeReplyObject(rep);
    if (!ok) {
        drop(r);
        return sop__err_set(err, SOP_UNREACHABLE, 0, "INFO server: no run_id in the reply");
    }
    return SOP_OK;
}

/*
 * Runs one command (argv form, binary-safe) and returns its reply, which is
 * never an error reply: those become SOP_UNREACHABLE (invariant 4). Reconnects
 * and retries once when a connection made before the call gives no reply
 * (invariant 3); *retried (if not NULL) says whether the command was sent
 * twice, so a reply can be read with that in mind.
 */
static sop_rc run(rcoord *r, const char *verb, const char *key, int argc, const char **argv,
                  const size_t *lens, redisReply **out, bool *retried, sop_err *err)
{
    sigpipe_guard guard;
    sigpipe_block(&guard);
    if (r->ctx && r->pid != getpid())
        drop(r); /* inherited through fork (invariant 6) */
    if (retried)
        *retried = false;
    bool fresh = r->ctx == NULL;
    sop_err first = {0};
    sop_rc rc = SOP_OK;
    if (fresh && (rc = connect_server(r, &first)) != SOP_OK) {
        sigpipe_unblock(&guard);
        return fail(r, err, rc, "%s%s%s: %s", verb, key ? " " : "", key ? key : "", first.msg);
    }
    rc = exchange(r, verb, key, argc, argv, lens, out, &first);
    if (rc == SOP_UNREACHABLE && !fresh) {
        /* a stale connection (server restarted, idle connection killed,
         * timeout): one new connection, one more try */
        sop_err second = {0};
        rc = connect_server(r, &second);
        if (rc == SOP_OK)
            rc = exchange(r, verb, key, argc, argv, lens, out, &second);
        if (retried)
            *retried = true;
        if (rc != SOP_OK) {
            sigpipe_unblock(&guard);
            return fail(r, err, rc, "%s; after reconnecting: %s", first.msg, second.msg);
        }
    }
    sigpipe_unblock(&guard);
    if (rc != SOP_OK)
        return fail(r, err, rc, "%s", first.msg);
    redisReply *rep = *out;
    if (rep->type == REDIS_REPLY_ERROR) {
        /* a server that is loading, or a replica after a failover: the next
         * call reconnects (which follows a moved DNS name) */
        if (strncmp(rep->str, "LOADING", 7) == 0 || strncmp(rep->str, "READONLY", 8) == 0 ||
            strncmp(rep->str, "MASTERDOWN", 10) == 0)
            drop(r);
        rc = fail(r, err, SOP_UNREACHABLE, "%s%s%s: %s", verb, key ? " " : "", key ? key : "",
                  rep->str);
        freeReplyObject(rep);
        return rc;
    }
    return SOP_OK;
}

/* ---- Locks ---- */

static sop_rc check_ttl(const rcoord *r, const char *what, const char *key, uint32_t ttl_ms,
                        sop_err *err)
{
    if (ttl_ms == 0)
        return fail(r, err, SOP_INVALID, "%s %s: a time to live of 0 ms", what, key);
    return SOP_OK;
}

/* Runs a token-comparing script: 1 (it acted) is SOP_OK, 0 SOP_CONFLICT. */
static sop_rc token_script(rcoord *r, const char *verb, const char *script, const char *key,
                           const uint8_t token[SOP__COORD_TOKEN_LEN], const char *ttl, sop_err *err)
{
    const char *argv[6] = {"EVAL", script, "1", key, (const char *)token, ttl};
    size_t lens[6] = {4,           strlen(script),       1,
                      strlen(key), SOP__COORD_TOKEN_LEN, ttl ? strlen(ttl) : 0};
    redisReply *rep;
    SOP__TRY(run(r, verb, key, ttl ? 6 : 5, argv, lens, &rep, NULL, err));
    sop_rc rc;
    if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 1)
        rc = SOP_OK;
    else if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 0)
        rc = fail(r, err, SOP_CONFLICT, "%s %s: not held by this token (expired or taken over)",
                  verb, key);
    else
        rc = unexpected(r, verb, key, rep, err);
    freeReplyObject(rep);
    return rc;
}

static sop_rc r_extend(sop__coord *c, const char *key, const uint8_t token[SOP__COORD_TOKEN_LEN],
                       uint32_t ttl_ms, sop_err *err)
{
    rcoord *r = (rcoord *)c;
    SOP__TRY(check_ttl(r, "extend lock", key, ttl_ms, err));
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%" PRIu32, ttl_ms);
    return token_script(r, "extend lock", EXTEND_SCRIPT, key, token, ttl, err);
}

static sop_rc r_try_lock(sop__coord *c, const char *key, const uint8_t token[SOP__COORD_TOKEN_LEN],
                         uint32_t ttl_ms, sop_err *err)
{
    rcoord *r = (rcoord *)c;
    SOP__TRY(check_ttl(r, "lock", key, ttl_ms, err));
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%" PRIu32, ttl_ms);
    const char *argv[6] = {"SET", key, (const char *)token, "NX", "PX", ttl};
    size_t lens[6] = {3, strlen(key), SOP__COORD_TOKEN_LEN, 2, 2, strlen(ttl)};
    redisReply *rep;
    bool retried;
    SOP__TRY(run(r, "SET NX", key, 6, argv, lens, &rep, &retried, err));
    sop_rc rc;
    if (is_status(rep, "OK")) {
        rc = SOP_OK;
    } else if (rep->type == REDIS_REPLY_NIL) {
        rc = SOP_LOCKED;
        /* the first attempt may have taken it and lost the reply
         * (invariant 3): if the token is ours, it is ours - with a fresh
         * TTL */
        if (retried) {
            rc = token_script(r, "extend lock", EXTEND_SCRIPT, key, token, ttl, err);
            if (rc == SOP_CONFLICT)
                rc = SOP_LOCKED;
        }
        if (rc == SOP_LOCKED)
            fail(r, err, SOP_LOCKED, "lock %s: already held", key);
    } else {
        rc = unexpected(r, "SET NX", key, rep, err);
    }
    freeReplyObject(rep);
    return rc;
}

static sop_rc r_unlock(sop__coord *c, const char *key, const uint8_t token[SOP__COORD_TOKEN_LEN],
                       sop_err *err)
{
    return token_script((rcoord *)c, "unlock", UNLOCK_SCRIPT, key, token, NULL, err);
}

/* ---- The L2 cache ---- */

static sop_rc r_get(sop__coord *c, const char *key, uint32_t slide_ms, uint8_t **val, size_t *len,
                    sop_err *err)
{
    rcoord *r = (rcoord *)c;
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%" PRIu32, slide_ms);
    const char *argv[4] = {slide_ms ? "GETEX" : "GET", key, "PX", ttl};
    size_t lens[4] = {slide_ms ? 5u : 3u, strlen(key), 2, strlen(ttl)};
    redisReply *rep;
    SOP__TRY(run(r, argv[0], key, slide_ms ? 4 : 2, argv, lens, &rep, NULL, err));
    sop_rc rc = SOP_OK;
    if (rep->type == REDIS_REPLY_STRING) {
        uint8_t *copy = sop__malloc(rep->len);
        if (copy == NULL) {
            rc = fail(r, err, SOP_NOMEM, "GET %s: no memory for a value of %zu bytes", key,
                      rep->len);
        } else {
            if (rep->len)
                memcpy(copy, rep->str, rep->len);
            *val = copy;
            *len = rep->len;
        }
    } else if (rep->type == REDIS_REPLY_NIL) {
        rc = sop__err_set_const(err, SOP_NOTFOUND, "redis cache: no such key");
    } else {
        rc = unexpected(r, argv[0], key, rep, err);
    }
    freeReplyObject(rep);
    return rc;
}

static sop_rc r_set(sop__coord *c, const char *key, const void *val, size_t len, uint32_t ttl_ms,
                    sop_err *err)
{
    rcoord *r = (rcoord *)c;
    SOP__TRY(check_ttl(r, "SET", key, ttl_ms, err));
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%" PRIu32, ttl_ms);
    const char *argv[5] = {"SET", key, val ? (const char *)val : "", "PX", ttl};
    size_t lens[5] = {3, strlen(key), len, 2, strlen(ttl)};
    redisReply *rep;
    SOP__TRY(run(r, "SET", key, 5, argv, lens, &rep, NULL, err));
    sop_rc rc = is_status(rep, "OK") ? SOP_OK : unexpected(r, "SET", key, rep, err);
    freeReplyObject(rep);
    return rc;
}

static sop_rc r_del(sop__coord *c, const char *const *keys, size_t n, sop_err *err)
{
    rcoord *r = (rcoord *)c;
    if (n == 0)
        return SOP_OK;
    if (n >= (size_t)INT32_MAX)
        return fail(r, err, SOP_LIMIT, "DEL: %zu keys in one call", n);
    const char **argv = sop__malloc((n + 1) * sizeof(*argv));
    size_t *lens = sop__malloc((n + 1) * sizeof(*lens));
    if (argv == NULL || lens == NULL) {
        sop__free(argv);
        sop__free(lens);
        return fail(r, err, SOP_NOMEM, "DEL: no memory for %zu keys", n);
    }
    argv[0] = "DEL";
    lens[0] = 3;
    for (size_t i = 0; i < n; i++) {
        argv[i + 1] = keys[i];
        lens[i + 1] = strlen(keys[i]);
    }
    redisReply *rep;
    sop_rc rc = run(r, "DEL", keys[0], (int)(n + 1), argv, lens, &rep, NULL, err);
    sop__free(argv);
    sop__free(lens);
    if (rc != SOP_OK)
        return rc;
    if (rep->type != REDIS_REPLY_INTEGER)
        rc = unexpected(r, "DEL", keys[0], rep, err);
    freeReplyObject(rep);
    return rc;
}

/* ---- Epoch ---- */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    for (const unsigned char *b = p; n--; b++) {
        h ^= *b;
        h *= 1099511628211ull;
    }
    return h;
}

/* GET of the epoch key: SOP_OK with the reply (a string), or SOP_NOTFOUND. */
static sop_rc get_epoch_token(rcoord *r, const char *key, redisReply **out, sop_err *err)
{
    const char *argv[2] = {"GET", key};
    size_t lens[2] = {3, strlen(key)};
    redisReply *rep;
    SOP__TRY(run(r, "GET", key, 2, argv, lens, &rep, NULL, err));
    if (rep->type == REDIS_REPLY_STRING) {
        *out = rep;
        return SOP_OK;
    }
    sop_rc rc = rep->type == REDIS_REPLY_NIL ? SOP_NOTFOUND : unexpected(r, "GET", key, rep, err);
    freeReplyObject(rep);
    return rc;
}

static sop_rc r_epoch(sop__coord *c, uint64_t *out, sop_err *err)
{
    rcoord *r = (rcoord *)c;
    char key[sizeof(c->ns) + sizeof(EPOCH_KEY)];
    snprintf(key, sizeof(key), "%s%s", c->ns, EPOCH_KEY);
    redisReply *rep;
    sop_rc rc = get_epoch_token(r, key, &rep, err);
    if (rc == SOP_NOTFOUND) {
        /* new, or lost (FLUSHALL, FLUSHDB, restart without persistence):
         * whoever sets it first wins, everyone reads the winner's */
        uint64_t tok = sop__random64();
        const char *argv[4] = {"SET", key, (const char *)&tok, "NX"};
        size_t lens[4] = {3, strlen(key), sizeof(tok), 2};
        redisReply *set;
        SOP__TRY(run(r, "SET NX", key, 4, argv, lens, &set, NULL, err));
        bool ok = is_status(set, "OK") || set->type == REDIS_REPLY_NIL;
        if (!ok)
            rc = unexpected(r, "SET NX", key, set, err);
        freeReplyObject(set);
        if (!ok)
            return rc;
        rc = get_epoch_token(r, key, &rep, err);
        if (rc == SOP_NOTFOUND)
            return fail(r, err, SOP_UNREACHABLE, "GET %s: the epoch key vanished once set", key);
    }
    if (rc != SOP_OK)
        return rc;
    uint64_t h = fnv1a(1469598103934665603ull, rep->str, rep->len);
    h = fnv1a(h, "|", 1);
    *out = fnv1a(h, r->run_id, strlen(r->run_id));
    freeReplyObject(rep);
    return SOP_OK;
}

/* ---- Open and close ---- */

static void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        sop__free(s);
    }
}

static void destroy(rcoord *r)
{
    drop(r);
    sop__free(r->host);
    sop__free(r->user);
    free_secret(r->password);
    sop__free(r);
}

static void r_close(sop__coord *c)
{
    destroy((rcoord *)c);
}

static const sop__coord_ops redis_ops = {
    .try_lock = r_try_lock,
    .extend = r_extend,
    .unlock = r_unlock,
    .get = r_get,
    .set = r_set,
    .del = r_del,
    .epoch = r_epoch,
    .close = r_close,
};

/* sop__malloc'ed copy of s (NULL stays NULL); false when out of memory. */
static bool dup_str(const char *s, char **out)
{
    *out = NULL;
    if (s == NULL)
        return true;
    size_t n = strlen(s) + 1;
    *out = sop__malloc(n);
    if (*out == NULL)
        return false;
    memcpy(*out, s, n);
    return true;
}

sop_rc sop__coord_redis_open(const sop_redis_options *o, const char *ns, sop__coord **out,
                             sop_err *err)
{
    size_t ns_len = strlen(ns);
    if (ns_len >= sizeof(((sop__coord *)NULL)->ns))
        return sop__err_set(err, SOP_LIMIT, 0,
                            "redis coordination: namespace %s is longer than %zu bytes", ns,
                            sizeof(((sop__coord *)NULL)->ns) - 1);
    const char *host = o->host && o->host[0] ? o->host : DEFAULT_HOST;
    uint16_t port = o->port ? o->port : DEFAULT_PORT;
    if (o->user && o->password == NULL)
        return sop__err_set(err, SOP_INVALID, 0,
                            "redis %s:%u: user %s given without a password (for a nopass "
                            "user, give any password)",
                            host, (unsigned)port, o->user);
    rcoord *r = sop__calloc(1, sizeof(*r));
    if (r == NULL)
        return sop__err_set(err, SOP_NOMEM, 0, "redis coordination: no memory for a handle");
    if (!dup_str(host, &r->host) || !dup_str(o->user, &r->user) ||
        !dup_str(o->password, &r->password)) {
        destroy(r);
        return sop__err_set(err, SOP_NOMEM, 0, "redis coordination: no memory for the options");
    }
    r->c.ops = &redis_ops;
    r->c.kind = "redis";
    memcpy(r->c.ns, ns, ns_len + 1);
    r->port = port;
    r->database = o->database;
    r->timeout_ms = o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;

    sigpipe_guard guard;
    sigpipe_block(&guard);
    sop_rc rc = connect_server(r, err);
    sigpipe_unblock(&guard);
    if (rc != SOP_OK) {
        sop__err_prefix(err, "redis %s:%u", r->host, (unsigned)r->port);
        destroy(r);
        return rc;
    }
    *out = &r->c;
    return SOP_OK;
}

/*
 * test_coord_redis.c - the Redis coordination backend (engine/src/
 * coord_redis.c) against private redis-servers (t_redis_start): lock
 * exclusivity and ownership, TTL expiry and extend, waiting for a lock,
 * the L2 cache (binary values, TTLs, sliding expiry, DEL), AUTH and ACL
 * users, SELECT, unreachable servers, command timeouts and reconnects, a
 * lost reply to SET NX, SIGPIPE, fork, the epoch across FLUSHALL/FLUSHDB
 * and restarts, namespaces, error replies and allocation failures.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "coord.h"
#include "fault.h"
#include "mem.h"
#include "t.h"

#define NS "sop:00000000-0000-4000-8000-000000000001:"

static sop_err err;

/* ---- Helpers ---- */

static int64_t wall_ms(void) /* the clock of sop__coord_lock's deadline */
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static sop_redis_options opts_for(const t_redis *r)
{
    sop_redis_options o = {0};
    o.host = "127.0.0.1";
    o.port = r->port;
    o.timeout_ms = 2000;
    return o;
}

static sop__coord *open_ns(const t_redis *r, const char *ns)
{
    sop_redis_options o = opts_for(r);
    sop__coord *c = NULL;
    CHECK_OK(sop__coord_redis_open(&o, ns, &c, &err), &err);
    CHECK(c != NULL);
    CHECK(strcmp(c->kind, "redis") == 0);
    CHECK(strcmp(c->ns, ns) == 0);
    return c;
}

static sop__coord *open_c(const t_redis *r)
{
    return open_ns(r, NS);
}

static void token(uint8_t t[SOP__COORD_TOKEN_LEN], uint8_t fill)
{
    memset(t, fill, SOP__COORD_TOKEN_LEN);
    t[3] = 0; /* binary-safe: a NUL inside */
}

static void key_of(sop__coord *c, const char *name, char out[SOP__COORD_KEY_MAX])
{
    CHECK_OK(sop__coord_key(c, name, NULL, out, &err), &err);
}

/* Runs a command on a side connection; fails the test on an error reply. */
static redisReply *side(redisContext *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(s, fmt, ap);
    va_end(ap);
    CHECK_MSG(rep != NULL, "side command %s: %s", fmt, s->errstr);
    CHECK_MSG(rep->type != REDIS_REPLY_ERROR, "side command %s: %s", fmt, rep->str);
    return rep;
}

static void side_do(const t_redis *r, const char *cmd)
{
    redisContext *s = t_redis_connect(r, NULL);
    freeReplyObject(side(s, cmd));
    redisFree(s);
}

/* The raw value of a key, as the server has it (len -1: missing). */
static void side_get(const t_redis *r, const char *key, uint8_t *buf, long *len)
{
    redisContext *s = t_redis_connect(r, NULL);
    redisReply *rep = side(s, "GET %s", key);
    *len = -1;
    if (rep->type == REDIS_REPLY_STRING) {
        *len = (long)rep->len;
        memcpy(buf, rep->str, rep->len);
    }
    freeReplyObject(rep);
    redisFree(s);
}

static bool held_by(const t_redis *r, const char *key, const uint8_t tok[SOP__COORD_TOKEN_LEN])
{
    uint8_t buf[64];
    long len;
    side_get(r, key, buf, &len);
    return len == SOP__COORD_TOKEN_LEN && memcmp(buf, tok, SOP__COORD_TOKEN_LEN) == 0;
}

/* ---- 1-4: locks ---- */

TEST(lock_is_exclusive_and_owned)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop__coord *c = open_c(&srv);
    char key[SOP__COORD_KEY_MAX];
    key_of(c, "commit", key);
    uint8_t a[SOP__COORD_TOKEN_LEN], b[SOP__COORD_TOKEN_LEN];
    token(a, 0xaa);
    token(b, 0xbb);

    CHECK_OK(c->ops->try_lock(c, key, a, 10000, &err), &err);
    CHECK(held_by(&srv, key, a));
    CHECK_RC(c->ops->try_lock(c, key, b, 10000, &err), SOP_LOCKED, &err);
    CHECK(strstr(err.msg, key) != NULL);
    /* the owner taking it again is LOCKED too: SET NX knows no owners */
    CHECK_RC(c->ops->try_lock(c, key, a, 10000, &err), SOP_LOCKED, &err);
    CHECK_RC(c->ops->unlock(c, key, b, &err), SOP_CONFLICT, &err);
    CHECK_RC(c->ops->extend(c, key, b, 10000, &err), SOP_CONFLICT, &err);
    CHECK(held_by(&srv, key, a));
    CHECK_OK(c->ops->unlock(c, key, a, &err), &err);
    long len;
    uint8_t buf[64];
    side_get(&srv, key, buf, &len);
    CHECK_EQ(len, -1);
    CHECK_RC(c->ops->unlock(c, key, a, &err), SOP_CONFLICT, &err);
    CHECK_OK(c->ops->try_lock(c, key, b, 10000, &err), &err);
    CHECK(held_by(&srv, key, b));
    /* a token differing only after its NUL byte is another token */
    uint8_t b2[SOP__COORD_TOKEN_LEN];
    memcpy(b2, b, sizeof(b2));
    b2[15] ^= 1;
    CHECK_RC(c->ops->unlock(c, key, b2, &err), SOP_CONFLICT, &err);
    CHECK_OK(c->ops->unlock(c, key, b, &err), &err);
    /* a time to live of 0 is a caller's mistake, not "forever" */
    CHECK_RC(c->ops->try_lock(c, key, a, 0, &err), SOP_INVALID, &err);
    sop__coord_close(c);
    sop__coord_close(NULL);
    t_redis_stop(&srv);
}

TEST(lock_expires_and_old_owner_cannot_touch_it)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop__coord *c = open_c(&srv);
    char key[SOP__COORD_KEY_MAX];
    key_of(c, "commit", key);
    uint8_t a[SOP__COORD_TOKEN_LEN], b[SOP__COORD_TOKEN_LEN];
    token(a, 0x11);
    token(b, 0x22);

    CHECK_OK(c->ops->try_lock(c, key, a, 200, &err), &err);
    CHECK_RC(c->ops->try_lock(c, key, b, 10000, &err), SOP_LOCKED, &err);
    sleep_ms(400);
    CHECK_OK(c->ops->try_lock(c, key, b, 10000, &err), &err);
    CHECK_RC(c->ops->extend(c, key, a, 10000, &err), SOP_CONFLICT, &err);
    CHECK(strstr(err.msg, "not held by this token") != NULL);
    CHECK_RC(c->ops->unlock(c, key, a, &err), SOP_CONFLICT, &err);
    CHECK(held_by(&srv, key, b));
    CHECK_RC(c->ops->try_lock(c, key, a, 10000, &err), SOP_LOCKED, &err);
    sop__coord_close(c);
    t_redis_stop(&srv);
}

TEST(extend_keeps_a_lock_past_its_ttl)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop__coord *c = open_c(&srv);
    char key[SOP__COORD_KEY_MAX];
    key_of(c, "commit", key);
    uint8_t a[SOP__COORD_TOKEN_LEN], b[SOP__COORD_TOKEN_LEN];
    token(a, 0x33);
    token(b, 0x44);

    CHECK_OK(c->ops->try_lock(c, key, a, 400, &err), &err);
    for (int i = 0; i < 8; i++) { /* 1200 ms: three original TTLs */
        sleep_ms(150);
        CHECK_OK(c->ops->extend(c, key, a, 400, &err), &err);
    }
    CHECK_RC(c->ops->try_lock(c, key, b, 300, &err), SOP_LOCKED, &err);
    CHECK(held_by(&srv, key, a));
    CHECK_RC(c->ops->extend(c, key, a, 0, &err), SOP_INVALID, &err);
    sleep_ms(600); /* no more extends: it expires */
    CHECK_OK(c->ops->try_lock(c, key, b, 300, &err), &err);
    sop__coord_close(c);
    t_redis_stop(&srv);
}

typedef struct releaser {
    sop__coord *c;
    const char *key;
    const uint8_t *tok;
    sop_rc rc;
    sop_err err;
} releaser;

static void *release_later(void *arg)
{
    releaser *rl = arg;
    sleep_ms(100);
    rl->rc = rl->c->ops->unlock(rl->c, rl->key, rl->tok, &rl->err);
    return NULL;
}

TEST(coord_lock_waits_for_release_and_times_out)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop__coord *c1 = open_c(&srv), *c2 = open_c(&srv);
    char key[SOP__COORD_KEY_MAX];
    key_of(c1, "commit", key);
    uint8_t held[SOP__COORD_TOKEN_LEN], mine[SOP__COORD_TOKEN_LEN];
    token(held, 0x55);

    /* c2 holds it; a thread releases it through c2 after ~100 ms */
    CHECK_OK(c2->ops->try_lock(c2, key, held, 30000, &err), &err);
    releaser rl = {c2, key, held, SOP_INTERNAL, {0}};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, release_later, &rl), 0);
    int64_t t0 = mono_ms();
    CHECK_OK(sop__coord_lock(c1, key, 30000, wall_ms() + 5000, mine, &err), &err);
    int64_t waited = mono_ms() - t0;
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_OK(rl.rc, &rl.err);
    CHECK_MSG(waited >= 80 && waited < 2000, "waited %lld ms", (long long)waited);
    CHECK(held_by(&srv, key, mine));

    /* never released: SOP_TIMEOUT at the deadline, naming the key */
    uint8_t other[SOP__COORD_TOKEN_LEN];
    t0 = mono_ms();
    CHECK_RC(sop__coord_lock(c2, key, 30000, wall_ms() + 300, other, &err), SOP_TIMEOUT, &err);
    waited = mono_ms() - t0;
    CHECK_MSG(waited >= 280 && waited < 1000, "timed out after %lld ms", (long long)waited);
    CHECK(strstr(err.msg, key) != NULL);
    CHECK(held_by(&srv, key, mine));
    sop__coord_close(c1);
    sop__coord_close(c2);
    t_redis_stop(&srv);
}

/* ---- 5: the L2 cache ---- */

static void check_value(sop__coord *c, const char *key, uint32_t slide_ms, const void *want,
                        size_t want_len)
{
    uint8_t *val = NULL;
    size_t len = 12345;
    CHECK_OK(c->ops->get(c, key, slide_ms, &val, &len, &err), &err);
    CHECK_EQ(len, want_len);
    CHECK(want == NULL || len == 0 || memcmp(val, want, len) == 0); /* NULL: length only */
    sop__free(val);
}

static void check_missing(sop__coord *c, const char *key)
{
    uint8_t *val = (uint8_t *)"untouched";
    size_t len = 77;
    CHECK_RC(c->ops->get(c, key, 0, &val, &len, &err), SOP_NOTFOUND, &err);
    CHECK(strcmp((const char *)val, "untouched") == 0 && len == 77);
}

TEST(cache_get_set_del)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop__coord *c = open_c(&srv);
    char k1[SOP__COORD_KEY_MAX], k2[SOP__COORD_KEY_MAX], k3[SOP__COORD_KEY_MAX];
    CHECK_OK(sop__coord_key(c, "node:", "1", k1, &err), &err);
    CHECK_OK(sop__coord_key(c, "node:", "2", k2, &err), &err);
    CHECK_OK(sop__coord_key(c, "node:", "3", k3, &err), &err);

    check_missing(c, k1);
    static const uint8_t bin[] = {0, 1, 0, 255, '\n', '\r', 0, '$', '*', 0};
    CHECK_OK(c->ops->set(c, k1, bin, sizeof(bin), 60000, &err), &err);
    check_value(c, k1, 0, bin, sizeof(bin));
    check_value(c, k1, 60000, bin, sizeof(bin));
    uint8_t raw[64];
    long raw_len;
    side_get(&srv, k1, raw, &raw_len);
    CHECK_EQ(raw_len, sizeof(bin));
    CHECK(memcmp(raw, bin, sizeof(bin)) == 0);

    CHECK_OK(c->ops->set(c, k2, NULL, 0, 60000, &err), &err); /* empty value */
    check_value(c, k2, 0, "", 0);
    size_t big_len = 3u << 20; /* 3 MiB */
    uint8_t *big = malloc(big_len);
    CHECK(big != NULL);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)(i * 131 + (i >> 12));
    CHECK_OK(c->ops->set(c, k3, big, big_len, 60000, &err), &err);
    check_value(c, k3, 0, big, big_len);
    free(big);
    /* overwrite */
    CHECK_OK(c->ops->set(c, k1, "v2", 2, 60000, &err), &err);
    check_value(c, k1, 0, "v2", 2);
    CHECK_RC(c->ops->set(c, k1, "v3", 2, 0, &err), SOP_INVALID, &err);

    char missing[SOP__COORD_KEY_MAX];
    CHECK_OK(sop__coord_key(c, "node:", "none", missing, &err), &err);
    const char *keys[] = {k1, missing, k2};
    CHECK_OK(c->ops->del(c, keys, 3, &err), &err);
    check_missing(c, k1);
    check_missing(c, k2);
    check_value(c, k3, 0, NULL, big_len);
    CHECK_OK(c->ops->del(c, keys, 0, &err), &err);
    const char *one[] = {k3};
    CHECK_OK(c->ops->del(c, one, 1, &err), &err);
    check_missing(c, k3);
    sop__coord_close(c);
    t_redis_stop(&srv);
}

TEST(cache_ttl_and_sliding_expiry)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop__coord *c = open_c(&srv);
    char k[SOP__COORD_KEY_MAX];
    key_of(c, "entry", k);

    /* a plain get does not extend */
    CHECK_OK(c->ops->set(c, k, "x", 1, 300, &err), &err);
    sleep_ms(100);
    check_value(c, k, 0, "x", 1);
    sleep_ms(400);
    check_missing(c, k);

    /* a sliding get does: read every 100 ms for 1200 ms, three TTLs */
    CHECK_OK(c->ops->set(c, k, "y", 1, 400, &err), &err);
    for (int i = 0; i < 12; i++) {
        sleep_ms(100);
        check_value(c, k, 400, "y", 1);
    }
    sleep_ms(600); /* no more reads: it expires */
    check_missing(c, k);
    sop__coord_close(c);
    t_redis_stop(&srv);
}

/* ---- 6: AUTH, ACL users, SELECT ---- */

TEST(auth_with_requirepass)
{
    t_redis srv;
    t_redis_start(&srv, "--requirepass secret");
    sop_redis_options o = opts_for(&srv);
    sop__coord *c = NULL;
    char where[64];
    snprintf(where, sizeof(where), "127.0.0.1:%u", (unsigned)srv.port);

    CHECK_RC(sop__coord_redis_open(&o, NS, &c, &err), SOP_UNREACHABLE, &err);
    CHECK(c == NULL);
    CHECK_MSG(strstr(err.msg, where) && strstr(err.msg, "NOAUTH"), "%s", err.msg);
    o.password = "wrong";
    CHECK_RC(sop__coord_redis_open(&o, NS, &c, &err), SOP_UNREACHABLE, &err);
    CHECK_MSG(strstr(err.msg, where) && strstr(err.msg, "authentication failed"), "%s", err.msg);
    CHECK(strstr(err.msg, "wrong") == NULL); /* never the password */
    o.password = "secret";
    CHECK_OK(sop__coord_redis_open(&o, NS, &c, &err), &err);
    char key[SOP__COORD_KEY_MAX];
    key_of(c, "commit", key);
    uint8_t a[SOP__COORD_TOKEN_LEN];
    token(a, 0x66);
    CHECK_OK(c->ops->try_lock(c, key, a, 10000, &err), &err);

    /* a restart breaks the connection: the reconnect authenticates again */
    t_redis_restart(&srv);
    CHECK_OK(c->ops->try_lock(c, key, a, 10000, &err), &err);
    CHECK_OK(c->ops->unlock(c, key, a, &err), &err);
    sop__coord_close(c);
    t_redis_stop(&srv);
}

TEST(auth_with_acl_user)
{
    t_redis srv;
    t_redis_start(&srv, "--user alice on >pw ~* &* +@all");
    sop_redis_options o = opts_for(&srv);
    sop__coord *c = NULL;
    o.user = "alice";
    o.password = "nope";
    CHECK_RC(sop__coord_redis_open(&o, NS, &c, &err), SOP_UNREACHABLE, &err);
    CHECK_MSG(strstr(err.msg, "authentication failed") && strstr(err.msg, "WRONGPASS"), "%s",
              err.msg);
    o.user = "bob";
    o.password = "pw";
    CHECK_RC(sop__coord_redis_open(&o, NS, &c, &err), SOP_UNREACHABLE, &err);
    o.user = "alice";
    o.password = NULL; /* a user needs a password (any, for a nopass user) */
    CHECK_RC(sop__coord_redis_open(&o, NS, &c, &err), SOP_INVALID, &err);
    CHECK(strstr(err.msg, "alice") != NULL);
    o.password = "pw";
    CHECK_OK(sop__coord_redis_open(&o, NS, &c, &err), &err);
    char key[SOP__COORD_KEY_MAX];
    key_of(c, "k", key);
    CHECK_OK(c->ops->set(c, key, "v", 1, 10000, &err), &err);
    check_value(c, key, 0, "v", 1);
    sop__coord_close(c);
    t_redis_stop(&srv);
}

TEST(select_database_and_flushdb_epoch)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop_redis_options o = opts_for(&srv);
    o.database = 3;
    sop__coord *c = NULL;
    CHECK_OK(sop__coord_redis_open(&o, NS, &c, &err), &err);
    char key[SOP__COORD_KEY_MAX];
    key_of(c, "k", key);
    CHECK_OK(c->ops->set(c, key, "in3", 3, 60000, &err), &err);
    uint8_t buf[16];
    long len;
    side_get(&srv, key, buf, &len); /* the side connection is on database 0 */
    CHECK_EQ(len, -1);
    redisContext *s = t_redis_connect(&srv, NULL);
    freeReplyObject(side(s, "SELECT 3"));
    redisReply *rep = side(s, "GET %s", key);
    CHECK(rep->type == REDIS_REPLY_STRING && rep->len == 3 && memcmp(rep->str, "in3", 3) == 0);
    freeReplyObject(rep);

    uint64_t e1, e2;
    CHECK_OK(c->ops->epoch(c, &e1, &err), &err);
    freeReplyObject(side(s, "SELECT 0"));
    freeReplyObject(side(s, "FLUSHDB")); /* another database: nothing lost */
    CHECK_OK(c->ops->epoch(c, &e2, &err), &err);
    CHECK(e1 == e2);
    freeReplyObject(side(s, "SELECT 3"));
    freeReplyObject(side(s, "FLUSHDB"));
    CHECK_OK(c->ops->epoch(c, &e2, &err), &err);
    CHECK(e1 != e2);
    redisFree(s);
    sop__coord_close(c);

    o.database = 100000; /* beyond the server's databases */
    CHECK_RC(sop__coord_redis_open(&o, NS, &c, &err), SOP_UNREACHABLE, &err);
    CHECK_MSG(strstr(err.msg, "SELECT"), "%s", err.msg);
    t_redis_stop(&srv);
}

/* ---- 7-8: unreachable servers and timeouts ---- */

TEST(unreachable_server)
{
    sop_redis_options o = {0};
    o.host = "127.0.0.1";
    o.port = t_free_port();
    o.timeout_ms = 2000;
    sop__coord *c = NULL;
    int64_t t0 = mono_ms();
    CHECK_RC(sop__coord_redis_open(&o, NS, &c, &err), SOP_UNREACHABLE, &err);
    CHECK_MSG(mono_ms() - t0 < 500, "refused after %lld ms", (long long)(mono_ms() - t0));
    CHECK(c == NULL);
    char where[64];
    snprintf(where, sizeof(where), "redis 127.0.0.1:%u", (unsigned)o.port);
    CHECK_MSG(strstr(err.msg, where) && strstr(err.msg, "refused"), "%s", err.msg);

    /* a host that does not answer (or has no route): bounded by the timeout */
    o.host = "10.255.255.1";
    o.timeout_ms = 300;
    t0 = mono_ms();
    CHECK_RC(sop__coord_redis_open(&o, NS, &c, &err), SOP_UNREACHABLE, &err);
    CHECK_MSG(mono_ms() - t0 < 800, "gave up after %lld ms (%s)", (long long)(mono_ms() - t0),
              err.msg);
    CHECK(strstr(err.msg, "10.255.255.1") != NULL);
}

/* Every call on a handle whose server died fails: nothing silently works. */
TEST(dead_server_fails_every_call)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop__coord *c = open_c(&srv);
    char key[SOP__COORD_KEY_MAX];
    key_of(c, "commit", key);
    uint8_t a[SOP__COORD_TOKEN_LEN];
    token(a, 0x77);
    uint64_t e;
    CHECK_OK(c->ops->epoch(c, &e, &err), &err);
    CHECK_OK(c->ops->try_lock(c, key, a, 10000, &err), &err);
    t_redis_stop(&srv);

    uint8_t *val;
    size_t len;
    const char *keys[] = {key};
    int64_t t0 = mono_ms();
    CHECK_RC(c->ops->try_lock(c, key, a, 10000, &err), SOP_UNREACHABLE, &err);
    CHECK_MSG(strstr(err.msg, "after reconnecting"), "%s", err.msg); /* it was connected */
    CHECK_RC(c->ops->extend(c, key, a, 10000, &err), SOP_UNREACHABLE, &err);
    CHECK_RC(c->ops->unlock(c, key, a, &err), SOP_UNREACHABLE, &err);
    CHECK_RC(c->ops->get(c, key, 0, &val, &len, &err), SOP_UNREACHABLE, &err);
    CHECK_RC(c->ops->get(c, key, 100, &val, &len, &err), SOP_UNREACHABLE, &err);
    CHECK_RC(c->ops->set(c, key, "v", 1, 100, &err), SOP_UNREACHABLE, &err);
    CHECK_RC(c->ops->del(c, keys, 1, &err), SOP_UNREACHABLE, &err);
    CHECK_RC(c->ops->epoch(c, &e, &err), SOP_UNREACHABLE, &err);
    CHECK_MSG(mono_ms() - t0 < 1000, "took %lld ms", (long long)(mono_ms() - t0));
    CHECK_OK(c->ops->del(c, keys, 0, &err), &err); /* no keys: no round trip */
    sop__coord_close(c);
}

TEST(command_timeout_and_reconnect)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop_redis_options o = opts_for(&srv);
    o.timeout_ms = 300;
    sop__coord *c = NULL;
    CHECK_OK(sop__coord_redis_open(&o, NS, &c, &err), &err);
    char key[SOP__COORD_KEY_MAX];
    key_of(c, "k", key);
    CHECK_OK(c->ops->set(c, key, "v", 1, 60000, &err), &err);

    side_do(&srv, "CLIENT PAUSE 3000 ALL");
    int64_t paused_at = mono_ms();
    uint8_t *val = NULL;
    size_t len;
    CHECK_RC(c->ops->get(c, key, 0, &val, &len, &err), SOP_UNREACHABLE, &err);
    int64_t took = mono_ms() - paused_at;
    CHECK_MSG(took >= 250 && took < 1000, "took %lld ms", (long long)took);
    CHECK_MSG(strstr(err.msg, "timed out after 300 ms"), "%s", err.msg);
    /* no connection now: a new one whose first command times out */
    uint8_t a[SOP__COORD_TOKEN_LEN];
    token(a, 0x88);
    int64_t t0 = mono_ms();
    CHECK_RC(c->ops->try_lock(c, key, a, 10000, &err), SOP_UNREACHABLE, &err);
    CHECK_MSG(mono_ms() - t0 < 1000, "took %lld ms", (long long)(mono_ms() - t0));
    CHECK_MSG(strstr(err.msg, "timed out after 300 ms"), "%s", err.msg);

    int64_t left = 3000 - (mono_ms() - paused_at) + 200;
    if (left > 0)
        sleep_ms((int)left);
    check_value(c, key, 0, "v", 1);
    /* k holds a value: SET NX finds it taken */
    CHECK_RC(c->ops->try_lock(c, key, a, 10000, &err), SOP_LOCKED, &err);
    sop__coord_close(c);
    t_redis_stop(&srv);
}

/* A script that keeps the server busy for ms, sent without waiting for it. */
static redisContext *start_busy(const t_redis *r, int ms)
{
    redisContext *s = t_redis_connect(r, NULL);
    CHECK(redisAppendCommand(s, "EVAL %s 0 %d",
                             "local t0 = redis.call('TIME') "
                             "while true do local t = redis.call('TIME') "
                             "if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > tonumber(ARGV[1]) "
                             "then break end end return 1",
                             ms * 1000) == REDIS_OK);
    int done = 0;
    while (!done)
        CHECK(redisBufferWrite(s, &done) == REDIS_OK);
    sleep_ms(20); /* let the server start it */
    return s;
}

static void end_busy(redisContext *s)
{
    redisReply *rep = NULL;
    CHECK(redisGetReply(s, (void **)&rep) == REDIS_OK && rep != NULL);
    freeReplyObject(rep);
    redisFree(s);
}

/*
 * The first SET NX reaches the server, which is busy: the call times out,
 * reconnects and sends it again. The server then runs the first (from the
 * closed connection's buffered bytes) and the second finds the key taken -
 * by our own token. That is a taken lock, not SOP_LOCKED (invariant 3).
 * Busy for 1.5 timeouts: the first try times out, the reconnect's INFO
 * does not.
 */
TEST(lost_reply_to_set_nx_is_still_our_lock)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop_redis_options o = opts_for(&srv);
    o.timeout_ms = 400;
    sop__coord *c = NULL;
    CHECK_OK(sop__coord_redis_open(&o, NS, &c, &err), &err);
    char key[SOP__COORD_KEY_MAX];
    key_of(c, "commit", key);
    uint8_t a[SOP__COORD_TOKEN_LEN], b[SOP__COORD_TOKEN_LEN];
    token(a, 0x99);
    token(b, 0x9a);

    redisContext *s = start_busy(&srv, 600);
    int64_t t0 = mono_ms();
    CHECK_OK(c->ops->try_lock(c, key, a, 10000, &err), &err);
    CHECK_MSG(mono_ms() - t0 >= 350, "no timeout happened (%lld ms)", (long long)(mono_ms() - t0));
    end_busy(s);
    CHECK(held_by(&srv, key, a));
    CHECK_RC(c->ops->try_lock(c, key, b, 10000, &err), SOP_LOCKED, &err);
    CHECK_OK(c->ops->unlock(c, key, a, &err), &err);

    /* the same with the key held by someone else all along: LOCKED */
    CHECK_OK(c->ops->try_lock(c, key, b, 10000, &err), &err);
    s = start_busy(&srv, 600);
    CHECK_RC(c->ops->try_lock(c, key, a, 10000, &err), SOP_LOCKED, &err);
    end_busy(s);
    CHECK(held_by(&srv, key, b));
    sop__coord_close(c);
    t_redis_stop(&srv);
}

/* Writing a large value to a connection the server closed raises SIGPIPE,
 * which must not kill the process; the call reconnects and succeeds. */
TEST(server_closed_connection_is_no_sigpipe)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop__coord *c = open_c(&srv);
    char key[SOP__COORD_KEY_MAX];
    key_of(c, "big", key);
    size_t big_len = 8u << 20;
    uint8_t *big = calloc(1, big_len);
    CHECK(big != NULL);
    struct sigaction dfl = {0}, old;
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &dfl, &old);
    for (int i = 0; i < 3; i++) {
        side_do(&srv, "CLIENT KILL TYPE normal SKIPME yes");
        sleep_ms(50);
        sop_rc rc = c->ops->set(c, key, big, big_len, 60000, &err);
        if (rc != SOP_OK) {
            sigaction(SIGPIPE, &old, NULL);
            free(big);
        }
        CHECK_OK(rc, &err);
    }
    sigaction(SIGPIPE, &old, NULL);
    free(big);
    sigset_t pending;
    sigpending(&pending);
    CHECK(!sigismember(&pending, SIGPIPE));
    sop__coord_close(c);
    t_redis_stop(&srv);
}

/* A handle used in a forked child does not share the parent's socket. */
TEST(fork_child_gets_its_own_connection)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop__coord *c = open_c(&srv);
    uint64_t e;
    CHECK_OK(c->ops->epoch(c, &e, &err), &err); /* connected before the fork */
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    bool child = pid == 0;
    if (child)
        t_in_child();
    /* both hammer the handle at once: on a shared socket their replies
     * would cross */
    for (int i = 0; i < 2000; i++) {
        char key[SOP__COORD_KEY_MAX], v[32];
        CHECK_OK(sop__coord_key(c, child ? "child:" : "parent:", NULL, key, &err), &err);
        int n = snprintf(v, sizeof(v), "%s-%d", child ? "child" : "parent", i);
        CHECK_OK(c->ops->set(c, key, v, (size_t)n, 60000, &err), &err);
        check_value(c, key, 0, v, (size_t)n);
    }
    if (child) {
        sop__coord_close(c);
        _exit(0);
    }
    int st;
    CHECK_EQ(waitpid(pid, &st, 0), pid);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    sop__coord_close(c);
    t_redis_stop(&srv);
}

/* ---- 9: the epoch ---- */

TEST(epoch_changes_when_redis_loses_state)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop__coord *c = open_c(&srv), *c2 = open_c(&srv);
    uint64_t e1, e2, e3, e4, other;
    CHECK_OK(c->ops->epoch(c, &e1, &err), &err);
    CHECK_OK(c->ops->epoch(c, &e2, &err), &err);
    CHECK(e1 == e2);
    CHECK_OK(c2->ops->epoch(c2, &other, &err), &err); /* every handle agrees */
    CHECK(other == e1);
    char key[SOP__COORD_KEY_MAX];
    key_of(c, "k", key);
    CHECK_OK(c->ops->set(c, key, "v", 1, 60000, &err), &err); /* other keys: no change */
    CHECK_OK(c->ops->epoch(c, &e2, &err), &err);
    CHECK(e1 == e2);

    side_do(&srv, "FLUSHALL");
    CHECK_OK(c->ops->epoch(c, &e2, &err), &err);
    CHECK(e2 != e1);
    CHECK_OK(c2->ops->epoch(c2, &other, &err), &err);
    CHECK(other == e2);
    CHECK_OK(c->ops->epoch(c, &e3, &err), &err);
    CHECK(e3 == e2);

    /* a restart: the handle reconnects and the epoch changes */
    char ekey[SOP__COORD_KEY_MAX];
    key_of(c, "epoch", ekey);
    uint8_t tok[64];
    long tok_len;
    side_get(&srv, ekey, tok, &tok_len);
    CHECK(tok_len > 0);
    t_redis_restart(&srv);
    CHECK_OK(c->ops->epoch(c, &e3, &err), &err);
    CHECK(e3 != e2 && e3 != e1);
    CHECK_OK(c->ops->epoch(c, &e4, &err), &err);
    CHECK(e3 == e4);
    CHECK_OK(c2->ops->epoch(c2, &other, &err), &err);
    CHECK(other == e3);
    uint8_t a[SOP__COORD_TOKEN_LEN];
    token(a, 0xcc);
    CHECK_OK(c->ops->try_lock(c, key, a, 10000, &err), &err);

    /* a restart that kept the token (persistence) still changes it: run_id */
    redisContext *s = t_redis_connect(&srv, NULL);
    side_get(&srv, ekey, tok, &tok_len);
    CHECK(tok_len > 0);
    t_redis_restart(&srv);
    redisFree(s);
    s = t_redis_connect(&srv, NULL);
    freeReplyObject(side(s, "SET %s %b", ekey, tok, (size_t)tok_len));
    redisFree(s);
    CHECK_OK(c->ops->epoch(c, &e4, &err), &err);
    CHECK(e4 != e3);
    sop__coord_close(c);
    sop__coord_close(c2);
    t_redis_stop(&srv);
}

/* ---- 10: namespaces ---- */

TEST(namespaces_are_separate)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop__coord *a = open_ns(&srv, "sop:aaaaaaaa-0000-4000-8000-000000000001:");
    sop__coord *b = open_ns(&srv, "sop:bbbbbbbb-0000-4000-8000-000000000002:");
    char ka[SOP__COORD_KEY_MAX], kb[SOP__COORD_KEY_MAX];
    key_of(a, "commit", ka);
    key_of(b, "commit", kb);
    CHECK(strcmp(ka, kb) != 0);
    uint8_t t1[SOP__COORD_TOKEN_LEN], t2[SOP__COORD_TOKEN_LEN];
    token(t1, 1);
    token(t2, 2);
    CHECK_OK(a->ops->try_lock(a, ka, t1, 10000, &err), &err);
    CHECK_OK(b->ops->try_lock(b, kb, t2, 10000, &err), &err);
    CHECK_RC(b->ops->unlock(b, kb, t1, &err), SOP_CONFLICT, &err);

    char ca[SOP__COORD_KEY_MAX], cb[SOP__COORD_KEY_MAX];
    key_of(a, "node:", ca);
    key_of(b, "node:", cb);
    CHECK_OK(a->ops->set(a, ca, "A", 1, 60000, &err), &err);
    check_missing(b, cb);
    CHECK_OK(b->ops->set(b, cb, "B", 1, 60000, &err), &err);
    check_value(a, ca, 0, "A", 1);
    check_value(b, cb, 0, "B", 1);
    const char *keys[] = {cb};
    CHECK_OK(b->ops->del(b, keys, 1, &err), &err);
    check_value(a, ca, 0, "A", 1);

    uint64_t ea, eb;
    CHECK_OK(a->ops->epoch(a, &ea, &err), &err);
    CHECK_OK(b->ops->epoch(b, &eb, &err), &err);
    CHECK(ea != eb);

    /* the namespace must fit sop__coord.ns */
    char longns[80];
    memset(longns, 'n', sizeof(longns) - 1);
    longns[sizeof(longns) - 1] = '\0';
    sop_redis_options o = opts_for(&srv);
    sop__coord *c = NULL;
    longns[64] = '\0';
    CHECK_RC(sop__coord_redis_open(&o, longns, &c, &err), SOP_LIMIT, &err);
    longns[63] = '\0';
    CHECK_OK(sop__coord_redis_open(&o, longns, &c, &err), &err);
    sop__coord_close(c);
    sop__coord_close(a);
    sop__coord_close(b);
    t_redis_stop(&srv);
}

/* ---- Error replies and allocation failures ---- */

TEST(error_replies_are_failures)
{
    t_redis srv;
    t_redis_start(&srv, NULL);
    sop__coord *c = open_c(&srv);
    char key[SOP__COORD_KEY_MAX];
    key_of(c, "h", key);
    redisContext *s = t_redis_connect(&srv, NULL);
    freeReplyObject(side(s, "HSET %s f v", key));
    uint8_t *val;
    size_t len;
    CHECK_RC(c->ops->get(c, key, 0, &val, &len, &err), SOP_UNREACHABLE, &err);
    CHECK_MSG(strstr(err.msg, "WRONGTYPE") && strstr(err.msg, key), "%s", err.msg);
    CHECK_RC(c->ops->get(c, key, 100, &val, &len, &err), SOP_UNREACHABLE, &err);
    uint8_t a[SOP__COORD_TOKEN_LEN];
    token(a, 0xdd);
    CHECK_RC(c->ops->extend(c, key, a, 1000, &err), SOP_UNREACHABLE, &err);
    CHECK_RC(c->ops->unlock(c, key, a, &err), SOP_UNREACHABLE, &err);
    /* the epoch key holding something else than a string */
    char ekey[SOP__COORD_KEY_MAX];
    key_of(c, "epoch", ekey);
    freeReplyObject(side(s, "HSET %s f v", ekey));
    uint64_t e;
    CHECK_RC(c->ops->epoch(c, &e, &err), SOP_UNREACHABLE, &err);
    /* an out-of-memory server refuses writes */
    freeReplyObject(side(s, "CONFIG SET maxmemory 1"));
    CHECK_RC(c->ops->set(c, key, "v", 1, 1000, &err), SOP_UNREACHABLE, &err);
    CHECK_MSG(strstr(err.msg, "OOM"), "%s", err.msg);
    CHECK_RC(c->ops->try_lock(c, key, a, 1000, &err), SOP_UNREACHABLE, &err);
    freeReplyObject(side(s, "CONFIG SET maxmemory 0"));
    freeReplyObject(side(s, "DEL %s", key));
    CHECK_OK(c->ops->try_lock(c, key, a, 1000, &err), &err);
    redisFree(s);
    sop__coord_close(c);
    t_redis_stop(&srv);
}

TEST(allocation_failures)
{
    t_redis srv;
    t_redis_start(&srv, "--requirepass pw");
    sop_redis_options o = opts_for(&srv);
    o.user = "default";
    o.password = "pw";
    sop__coord *c = NULL;
    unsigned n;
    for (n = 1; n < 100; n++) {
        sop__fault_alloc(n, false);
        sop_rc rc = sop__coord_redis_open(&o, NS, &c, &err);
        sop__fault_reset();
        if (rc == SOP_OK)
            break;
        CHECK_RC(rc, SOP_NOMEM, &err);
        CHECK(c == NULL);
    }
    CHECK(n > 1 && n < 100);
    char k1[SOP__COORD_KEY_MAX], k2[SOP__COORD_KEY_MAX];
    key_of(c, "a", k1);
    key_of(c, "b", k2);
    CHECK_OK(c->ops->set(c, k1, "value", 5, 60000, &err), &err);
    uint8_t *val = NULL;
    size_t len;
    sop__fault_alloc(1, false);
    sop_rc rc = c->ops->get(c, k1, 0, &val, &len, &err);
    sop__fault_reset();
    CHECK_RC(rc, SOP_NOMEM, &err);
    const char *keys[] = {k1, k2};
    for (n = 1; n < 10; n++) {
        sop__fault_alloc(n, false);
        rc = c->ops->del(c, keys, 2, &err);
        sop__fault_reset();
        if (rc == SOP_OK)
            break;
        CHECK_RC(rc, SOP_NOMEM, &err);
    }
    CHECK(n > 1 && n < 10);
    check_missing(c, k1);
    sop__coord_close(c);
    t_redis_stop(&srv);
}

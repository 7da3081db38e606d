/*
 * coord.c - what both coordination backends share: key building, waiting
 * for a lock with jittered backoff, closing (docs/locking.md).
 */
#include "coord.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "uuid.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

sop_rc sop__coord_key(const sop__coord *c, const char *a, const char *b,
                      char out[SOP__COORD_KEY_MAX], sop_err *err)
{
    int n = snprintf(out, SOP__COORD_KEY_MAX, "%s%s%s", c->ns, a, b ? b : "");
    if (n < 0 || n >= SOP__COORD_KEY_MAX)
        return sop__err_set(err, SOP_LIMIT, 0, "coordination key %s%s%s is too long", c->ns, a,
                            b ? b : "");
    return SOP_OK;
}

sop_rc sop__coord_lock(sop__coord *c, const char *key, uint32_t ttl_ms, int64_t deadline_ms,
                       uint8_t token[SOP__COORD_TOKEN_LEN], sop_err *err)
{
    sop__uuid_v4(token);
    unsigned backoff = 1;
    for (;;) {
        sop_rc rc = c->ops->try_lock(c, key, token, ttl_ms, err);
        if (rc != SOP_LOCKED)
            return rc;
        if (now_ms() >= deadline_ms)
            return sop__err_set(err, SOP_TIMEOUT, 0,
                                "%s lock %s: still held by another process at the deadline",
                                c->kind, key);
        /* jittered exponential backoff, 1..32 ms: colliding waiters spread */
        unsigned ms = backoff + (unsigned)(sop__random64() % backoff);
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        if (backoff < 32)
            backoff *= 2;
    }
}

void sop__coord_close(sop__coord *c)
{
    if (c)
        c->ops->close(c);
}

/*
 * err.c - result-code names and messages (from the one SOP_RC_TABLE) and the
 * helpers that fill a caller-owned sop_err.
 */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *sop_rc_name(sop_rc rc)
{
    switch (rc) {
#define SOP__RC_NAME_(name, value, msg)                                                            \
    case SOP_##name:                                                                               \
        return "SOP_" #name;
        SOP_RC_TABLE(SOP__RC_NAME_)
#undef SOP__RC_NAME_
    }
    return "SOP_UNKNOWN";
}

const char *sop_rc_message(sop_rc rc)
{
    switch (rc) {
#define SOP__RC_MSG_(name, value, msg)                                                             \
    case SOP_##name:                                                                               \
        return msg;
        SOP_RC_TABLE(SOP__RC_MSG_)
#undef SOP__RC_MSG_
    }
    return "unknown result code";
}

void sop_err_clear(sop_err *err)
{
    if (err == NULL)
        return;
    err->code = SOP_OK;
    err->sys_errno = 0;
    err->msg[0] = '\0';
}

sop_rc sop__err_set(sop_err *err, sop_rc rc, int sys_errno, const char *fmt, ...)
{
    if (err == NULL)
        return rc;
    err->code = rc;
    err->sys_errno = sys_errno;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        err->msg[0] = '\0';
    if (sys_errno != 0) {
        size_t used = strlen(err->msg);
        if (used + 3 < sizeof(err->msg))
            snprintf(err->msg + used, sizeof(err->msg) - used, ": %s", strerror(sys_errno));
    }
    return rc;
}

sop_rc sop__err_set_const(sop_err *err, sop_rc rc, const char *msg)
{
    if (err == NULL)
        return rc;
    err->code = rc;
    err->sys_errno = 0;
    size_t n = strlen(msg);
    if (n >= sizeof(err->msg))
        n = sizeof(err->msg) - 1;
    memcpy(err->msg, msg, n);
    err->msg[n] = '\0';
    return rc;
}

void sop__err_prefix(sop_err *err, const char *fmt, ...)
{
    if (err == NULL)
        return;
    char prefix[SOP_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    char joined[2 * SOP_ERR_MSG_MAX + 2];
    snprintf(joined, sizeof(joined), "%s: %s", prefix, err->msg);
    snprintf(err->msg, sizeof(err->msg), "%.*s", (int)sizeof(err->msg) - 1, joined);
}

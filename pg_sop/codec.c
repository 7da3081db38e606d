/*
 * codec.c - how rows map onto SOP items (docs/pg_sop.md, "Type mapping";
 * the row format is in docs/format.md, "pg_sop rows").
 *
 * Keys: the key columns, in key order, with the engine's order-preserving
 * tuple codec (one field per column). Values: a self-describing row -
 *
 *   'R' 0x01 | u16 ncols | ncols x (u8 namelen, name, u8 kind,
 *                                   [kind 1: u8 typlen, type name], element)
 *
 * where element is one tuple-codec field: the value itself for the types
 * the codec has (kind 0), or its text form (kind 1, with the type's name
 * so IMPORT can recreate the column). Columns are found by name, so
 * dropping, adding or reordering columns never misreads an old row: a
 * missing column reads as NULL, an unknown one is ignored.
 *
 * A raw store (plain byte keys, made outside pg_sop) maps to (key bytea,
 * value bytea): key and value bytes as they are.
 *
 * A streaming store (sop.h, "Streaming stores") maps to (key text,
 * chunk_index integer, chunk bytea): the item key is the tuple (key,
 * chunk index) - the general key encoding of those two columns - and the
 * value is the chunk's bytes as they are.
 *
 * Text read from a store is checked to be valid in the database encoding
 * (the C API and the CLI can store any bytes).
 */
#include "pg_sop.h"

#include "access/htup_details.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "foreign/foreign.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_locale.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define ROW_MAGIC   'R'
#define ROW_VERSION 1

int pgsop_tuple_kind(Oid type)
{
    switch (type) {
    case BOOLOID:
        return SOP_TUPLE_BOOL;
    case INT2OID:
    case INT4OID:
    case INT8OID:
        return SOP_TUPLE_INT;
    case FLOAT4OID:
    case FLOAT8OID:
        return SOP_TUPLE_FLOAT8;
    case TEXTOID:
    case VARCHAROID:
        return SOP_TUPLE_TEXT;
    case BYTEAOID:
        return SOP_TUPLE_BYTEA;
    case UUIDOID:
        return SOP_TUPLE_UUID;
    case TIMESTAMPOID:
        return SOP_TUPLE_TIMESTAMP;
    case TIMESTAMPTZOID:
        return SOP_TUPLE_TIMESTAMPTZ;
    case DATEOID:
        return SOP_TUPLE_DATE;
    default:
        return -1;
    }
}

bool pgsop_key_type_ok(Oid type)
{
    return pgsop_tuple_kind(type) >= 0;
}

bool pgsop_order_matches(Oid type, Oid collation)
{
    if (!pgsop_key_type_ok(type))
        return false;
    if (pgsop_tuple_kind(type) == SOP_TUPLE_TEXT)
        return OidIsValid(collation) && lc_collate_is_c(collation);
    return true;
}

/* ---- encoding ----------------------------------------------------------- */

/* Runs one tuple-writer call into a StringInfo, growing it as needed. */
#define PUT(out, call)                                                                             \
    do {                                                                                           \
        sop_tuple_writer w_;                                                                       \
        for (;;) {                                                                                 \
            sop_tuple_writer_init(&w_, (out)->data + (out)->len, (out)->maxlen - (out)->len - 1);  \
            sop_tuple_writer *w = &w_;                                                             \
            call;                                                                                  \
            if (w_.len <= (size_t)((out)->maxlen - (out)->len - 1))                                \
                break;                                                                             \
            enlargeStringInfo((out), (int)w_.len + 1);                                             \
        }                                                                                          \
        (out)->len += (int)w_.len;                                                                 \
        (out)->data[(out)->len] = '\0';                                                            \
    } while (0)

static void key_type_error(Oid type) pg_attribute_noreturn();
static void key_type_error(Oid type)
{
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("type %s cannot be a pg_sop key column", format_type_be(type)),
                    errhint("Key columns can be boolean, smallint, integer, bigint, real, "
                            "double precision, text, varchar, bytea, uuid, timestamp, "
                            "timestamptz or date.")));
}

void pgsop_encode_field(StringInfo out, Oid type, Datum v)
{
    switch (type) {
    case BOOLOID:
        PUT(out, sop_tuple_put_bool(w, DatumGetBool(v)));
        break;
    case INT2OID:
        PUT(out, sop_tuple_put_int(w, DatumGetInt16(v)));
        break;
    case INT4OID:
        PUT(out, sop_tuple_put_int(w, DatumGetInt32(v)));
        break;
    case INT8OID:
        PUT(out, sop_tuple_put_int(w, DatumGetInt64(v)));
        break;
    case FLOAT4OID:
        PUT(out, sop_tuple_put_float8(w, (double)DatumGetFloat4(v)));
        break;
    case FLOAT8OID:
        PUT(out, sop_tuple_put_float8(w, DatumGetFloat8(v)));
        break;
    case TEXTOID:
    case VARCHAROID: {
        text *t = DatumGetTextPP(v);
        PUT(out, sop_tuple_put_text(w, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
        break;
    }
    case BYTEAOID: {
        bytea *b = DatumGetByteaPP(v);
        PUT(out, sop_tuple_put_bytea(w, VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b)));
        break;
    }
    case UUIDOID:
        PUT(out, sop_tuple_put_uuid(w, DatumGetUUIDP(v)->data));
        break;
    case TIMESTAMPOID:
        PUT(out, sop_tuple_put_timestamp(w, DatumGetTimestamp(v)));
        break;
    case TIMESTAMPTZOID:
        PUT(out, sop_tuple_put_timestamptz(w, DatumGetTimestampTz(v)));
        break;
    case DATEOID:
        PUT(out, sop_tuple_put_date(w, DatumGetDateADT(v)));
        break;
    default:
        key_type_error(type);
    }
}

static Oid att_type(PgSopShape *s, int i)
{
    return TupleDescAttr(s->desc, i)->atttypid;
}

static const char *att_name(PgSopShape *s, int i)
{
    return NameStr(TupleDescAttr(s->desc, i)->attname);
}

/* The chunk index of a streaming table's row: never negative. */
static void check_chunk_index(PgSopShape *s, int i, Datum v)
{
    int64 n;
    switch (att_type(s, i)) {
    case INT2OID:
        n = DatumGetInt16(v);
        break;
    case INT4OID:
        n = DatumGetInt32(v);
        break;
    default:
        n = DatumGetInt64(v);
        break;
    }
    if (n < 0)
        ereport(ERROR,
                (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
                 errmsg("chunk index " INT64_FORMAT " of streaming table \"%s\" is negative", n,
                        get_rel_name(s->relid)),
                 errdetail("Column \"%s\" numbers a value's chunks from 0.", att_name(s, i))));
}

void pgsop_encode_key(PgSopShape *s, Datum *values, bool *isnull, StringInfo out)
{
    resetStringInfo(out);
    for (int k = 0; k < s->nkeys; k++) {
        int i = s->keyatt[k] - 1;
        if (isnull[i])
            ereport(ERROR,
                    (errcode(ERRCODE_NOT_NULL_VIOLATION),
                     errmsg("null value in key column \"%s\" of relation \"%s\"",
                            NameStr(TupleDescAttr(s->desc, i)->attname), get_rel_name(s->relid))));
        if (s->raw) {
            bytea *b = DatumGetByteaPP(values[i]);
            appendBinaryStringInfo(out, VARDATA_ANY(b), (int)VARSIZE_ANY_EXHDR(b));
            if (VARSIZE_ANY_EXHDR(b) == 0)
                ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                                errmsg("a raw store's key cannot be empty")));
        } else if (s->stream) {
            if (k == 0 && VARSIZE_ANY_EXHDR(DatumGetTextPP(values[i])) == 0)
                ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                                errmsg("the key of streaming table \"%s\" cannot be empty",
                                       get_rel_name(s->relid))));
            if (k == 1)
                check_chunk_index(s, i, values[i]);
            pgsop_encode_field(out, att_type(s, i), values[i]);
        } else {
            pgsop_encode_field(out, att_type(s, i), values[i]);
        }
    }
}

static void put_u8(StringInfo out, int v)
{
    appendStringInfoChar(out, (char)(uint8)v);
}

void pgsop_encode_row(PgSopShape *s, Datum *values, bool *isnull, StringInfo out)
{
    resetStringInfo(out);
    if (s->stream) {
        int i = s->streamval;
        if (isnull[i])
            ereport(ERROR, (errcode(ERRCODE_NOT_NULL_VIOLATION),
                            errmsg("null value in column \"%s\" of streaming table \"%s\"",
                                   att_name(s, i), get_rel_name(s->relid)),
                            errhint("A chunk is bytes; an empty chunk is ''::bytea. Remove a "
                                    "chunk with DELETE.")));
        bytea *b = DatumGetByteaPP(values[i]);
        appendBinaryStringInfo(out, VARDATA_ANY(b), (int)VARSIZE_ANY_EXHDR(b));
        return;
    }
    if (s->raw) {
        if (s->rawval >= 0 && !isnull[s->rawval]) {
            bytea *b = DatumGetByteaPP(values[s->rawval]);
            appendBinaryStringInfo(out, VARDATA_ANY(b), (int)VARSIZE_ANY_EXHDR(b));
        }
        return;
    }
    put_u8(out, ROW_MAGIC);
    put_u8(out, ROW_VERSION);
    int at = out->len, n = 0;
    put_u8(out, 0);
    put_u8(out, 0);
    for (int i = 0; i < s->desc->natts; i++) {
        Form_pg_attribute a = TupleDescAttr(s->desc, i);
        if (a->attisdropped || s->iskey[i])
            continue;
        const char *name = NameStr(a->attname);
        put_u8(out, (int)strlen(name));
        appendStringInfoString(out, name);
        bool native = pgsop_tuple_kind(a->atttypid) >= 0;
        put_u8(out, native ? 0 : 1);
        if (!native) {
            char *tn = format_type_be(a->atttypid);
            size_t tl = strlen(tn);
            if (tl > 255)
                tl = 255;
            put_u8(out, (int)tl);
            appendBinaryStringInfo(out, tn, (int)tl);
        }
        if (isnull[i]) {
            PUT(out, sop_tuple_put_null(w, false));
        } else if (native) {
            pgsop_encode_field(out, a->atttypid, values[i]);
        } else {
            Oid outfn;
            bool varlena;
            getTypeOutputInfo(a->atttypid, &outfn, &varlena);
            char *txt = OidOutputFunctionCall(outfn, values[i]);
            PUT(out, sop_tuple_put_text(w, txt, strlen(txt)));
        }
        n++;
    }
    out->data[at] = (char)(n & 0xff);
    out->data[at + 1] = (char)(n >> 8);
}

/* ---- decoding ----------------------------------------------------------- */

static void corrupt(PgSopShape *s, const char *what)
{
    ereport(ERROR,
            (errcode(ERRCODE_DATA_CORRUPTED),
             errmsg("store \"%s\" holds an item pg_sop cannot read: %s", s->opts.store, what),
             errhint("Map stores made outside pg_sop as (key bytea OPTIONS (key "
                     "'true'), value bytea).")));
}

void pgsop_verify_text(const char *p, size_t len, const char *store, bool key)
{
    int enc = GetDatabaseEncoding();
    int ok = len > (size_t)MaxAllocSize ? 0 : pg_encoding_verifymbstr(enc, p, (int)len);
    if ((size_t)ok == len)
        return;
    ereport(ERROR, (errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
                    errmsg("store \"%s\" holds %s that is not valid %s text", store,
                           key ? "a key" : "a text value", GetDatabaseEncodingName()),
                    errdetail("Byte %d of %zu (0x%02x) is not valid.", ok + 1, len,
                              (unsigned)(unsigned char)p[ok]),
                    key ? errhint("Keys written outside PostgreSQL (by the C API or the sop CLI) "
                                  "can be any bytes; a query with a key condition still reads "
                                  "the other keys.")
                        : errhint("It was written outside PostgreSQL (by the C API or the sop "
                                  "CLI); map the column as bytea.")));
}

/* A decoded TEXT element's bytes (palloc'd, NUL-terminated), checked. */
static char *element_cstring(const sop_tuple_value *v, const char *store, bool key)
{
    char *s = palloc(v->len + 1);
    sop_tuple_value_copy(v, s);
    s[v->len] = '\0';
    pgsop_verify_text(s, v->len, store, key);
    return s;
}

/* The text form of a decoded element (for a column of another type). */
static char *element_text(const sop_tuple_value *v, const char *store, bool key)
{
    switch (v->type) {
    case SOP_TUPLE_BOOL:
        return pstrdup(v->b ? "true" : "false");
    case SOP_TUPLE_INT:
        return psprintf(INT64_FORMAT, v->i);
    case SOP_TUPLE_FLOAT8:
        return DatumGetCString(DirectFunctionCall1(float8out, Float8GetDatum(v->f)));
    case SOP_TUPLE_TEXT:
        return element_cstring(v, store, key);
    case SOP_TUPLE_BYTEA: {
        bytea *b = palloc(VARHDRSZ + v->len);
        SET_VARSIZE(b, VARHDRSZ + v->len);
        sop_tuple_value_copy(v, VARDATA(b));
        return DatumGetCString(DirectFunctionCall1(byteaout, PointerGetDatum(b)));
    }
    case SOP_TUPLE_UUID: {
        pg_uuid_t *u = palloc(sizeof(*u));
        memcpy(u->data, v->raw, 16);
        return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(u)));
    }
    case SOP_TUPLE_TIMESTAMP:
        return DatumGetCString(DirectFunctionCall1(timestamp_out, TimestampGetDatum(v->i)));
    case SOP_TUPLE_TIMESTAMPTZ:
        return DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(v->i)));
    case SOP_TUPLE_DATE:
        return DatumGetCString(DirectFunctionCall1(date_out, DateADTGetDatum(v->date)));
    default:
        return NULL;
    }
}

/* A decoded element as a Datum of `type` (through its text form when the
 * column's type is not the element's). */
static Datum element_datum(const sop_tuple_value *v, Form_pg_attribute a, const char *store,
                           bool key)
{
    Oid type = a->atttypid;
    if (pgsop_tuple_kind(type) == (int)v->type) {
        switch (type) {
        case BOOLOID:
            return BoolGetDatum(v->b);
        case INT2OID:
            if (v->i >= PG_INT16_MIN && v->i <= PG_INT16_MAX)
                return Int16GetDatum((int16)v->i);
            break;
        case INT4OID:
            if (v->i >= PG_INT32_MIN && v->i <= PG_INT32_MAX)
                return Int32GetDatum((int32)v->i);
            break;
        case INT8OID:
            return Int64GetDatum(v->i);
        case FLOAT4OID:
            return Float4GetDatum((float4)v->f);
        case FLOAT8OID:
            return Float8GetDatum(v->f);
        case TEXTOID:
        case VARCHAROID:
        case BYTEAOID: {
            struct varlena *t = palloc(VARHDRSZ + v->len);
            SET_VARSIZE(t, VARHDRSZ + v->len);
            sop_tuple_value_copy(v, VARDATA(t));
            if (type != BYTEAOID)
                pgsop_verify_text(VARDATA(t), v->len, store, key);
            return PointerGetDatum(t);
        }
        case UUIDOID: {
            pg_uuid_t *u = palloc(sizeof(*u));
            memcpy(u->data, v->raw, 16);
            return UUIDPGetDatum(u);
        }
        case TIMESTAMPOID:
        case TIMESTAMPTZOID:
            return Int64GetDatum(v->i);
        case DATEOID:
            return DateADTGetDatum(v->date);
        }
    }
    char *txt = element_text(v, store, key);
    if (txt == NULL)
        ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                        errmsg("column \"%s\": an unreadable stored value", NameStr(a->attname))));
    Oid infn, ioparam;
    getTypeInputInfo(type, &infn, &ioparam);
    return OidInputFunctionCall(infn, txt, ioparam, a->atttypmod);
}

/* A bytea Datum holding n bytes of p. */
static Datum bytes_datum(const void *p, size_t n)
{
    bytea *b = palloc(VARHDRSZ + n);
    SET_VARSIZE(b, VARHDRSZ + n);
    if (n)
        memcpy(VARDATA(b), p, n);
    return PointerGetDatum(b);
}

void pgsop_decode(PgSopShape *s, const void *key, size_t klen, const void *val, size_t vlen,
                  Datum *values, bool *isnull)
{
    int natts = s->desc->natts;
    for (int i = 0; i < natts; i++)
        isnull[i] = true;
    if (s->raw) {
        int ki = s->keyatt[0] - 1;
        values[ki] = bytes_datum(key, klen);
        isnull[ki] = false;
        if (s->rawval >= 0) {
            values[s->rawval] = bytes_datum(val, vlen);
            isnull[s->rawval] = false;
        }
        return;
    }
    sop_tuple_reader r;
    sop_tuple_value tv;
    sop_err err;
    sop_tuple_reader_init(&r, key, klen);
    for (int k = 0; k < s->nkeys; k++) {
        if (sop_tuple_next(&r, &tv, &err) != SOP_OK)
            corrupt(s, "a key with fewer fields than the table has key columns");
        int i = s->keyatt[k] - 1;
        if (tv.type == SOP_TUPLE_NULL)
            continue;
        values[i] = element_datum(&tv, TupleDescAttr(s->desc, i), s->opts.store, true);
        isnull[i] = false;
    }
    if (s->stream) {
        /* the chunk's bytes; NULL when the scan did not read them */
        if (val != NULL) {
            values[s->streamval] = bytes_datum(val, vlen);
            isnull[s->streamval] = false;
        }
        return;
    }
    const uint8 *p = val;
    if (vlen == 0)
        return; /* no value columns */
    if (vlen < 4 || p[0] != ROW_MAGIC || p[1] != ROW_VERSION)
        corrupt(s, "a value that is not a pg_sop row");
    int n = p[2] | (p[3] << 8);
    size_t at = 4;
    int guess = 0; /* rows written with the table's shape list columns in its order */
    for (int c = 0; c < n; c++) {
        if (at + 1 > vlen || at + 1 + p[at] + 1 > vlen)
            corrupt(s, "a truncated row");
        int nl = p[at];
        const char *name = (const char *)p + at + 1;
        at += 1 + nl;
        int kind = p[at++];
        if (kind == 1) {
            if (at >= vlen || at + 1 + p[at] > vlen)
                corrupt(s, "a truncated row");
            at += 1 + p[at];
        } else if (kind != 0) {
            corrupt(s, "a row with an unknown column kind");
        }
        sop_tuple_reader_init(&r, p + at, vlen - at);
        if (sop_tuple_next(&r, &tv, &err) != SOP_OK)
            corrupt(s, "a row with a malformed value");
        at += r.pos;
        int found = -1;
        for (int t = 0; t < natts && found < 0; t++) {
            int i = (guess + t) % natts;
            Form_pg_attribute a = TupleDescAttr(s->desc, i);
            if (!a->attisdropped && !s->iskey[i] && (int)strlen(NameStr(a->attname)) == nl &&
                memcmp(NameStr(a->attname), name, nl) == 0)
                found = i;
        }
        if (found < 0 || tv.type == SOP_TUPLE_NULL)
            continue; /* a dropped column, or NULL */
        guess = found + 1;
        values[found] = element_datum(&tv, TupleDescAttr(s->desc, found), s->opts.store, false);
        isnull[found] = false;
    }
}

/* ---- shapes ------------------------------------------------------------- */

void pgsop_shape_init(PgSopShape *s, Relation rel)
{
    memset(s, 0, sizeof(*s));
    s->relid = RelationGetRelid(rel);
    s->serverid = GetForeignTable(s->relid)->serverid;
    pgsop_table_options(s->relid, &s->opts);
    s->desc = RelationGetDescr(rel);
    int natts = s->desc->natts;
    s->keyatt = palloc0(sizeof(AttrNumber) * (natts + 1));
    s->iskey = palloc0(sizeof(bool) * (natts + 1));
    s->rawval = -1;
    for (int i = 0; i < natts; i++) {
        Form_pg_attribute a = TupleDescAttr(s->desc, i);
        if (a->attisdropped)
            continue;
        List *opts = GetForeignColumnOptions(s->relid, a->attnum);
        ListCell *lc;
        foreach (lc, opts) {
            DefElem *d = lfirst(lc);
            bool v = false;
            if (strcmp(d->defname, "key") == 0 && parse_bool(defGetString(d), &v) && v) {
                s->keyatt[s->nkeys++] = a->attnum;
                s->iskey[i] = true;
            }
        }
    }
    if (s->nkeys == 0)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
                 errmsg("foreign table \"%s\" has no key column", RelationGetRelationName(rel)),
                 errhint("Mark the key column(s): column OPTIONS (key 'true').")));
}

/* A raw store must be mapped as (key bytea, [value bytea]). */
static void check_raw(PgSopShape *s)
{
    bool ok = s->nkeys == 1 && att_type(s, s->keyatt[0] - 1) == BYTEAOID;
    for (int i = 0; ok && i < s->desc->natts; i++) {
        Form_pg_attribute a = TupleDescAttr(s->desc, i);
        if (a->attisdropped || s->iskey[i])
            continue;
        if (a->atttypid != BYTEAOID || s->rawval >= 0)
            ok = false;
        else
            s->rawval = i;
    }
    if (!ok)
        ereport(ERROR, (errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
                        errmsg("store \"%s\" has plain byte keys (it was not made by pg_sop)",
                               s->opts.store),
                        errhint("Map it as (key bytea OPTIONS (key 'true'), value bytea).")));
}

void pgsop_check_stream_shape(PgSopShape *s)
{
    const char *why = NULL;
    int ncols = 0, val = -1;
    for (int i = 0; i < s->desc->natts; i++) {
        Form_pg_attribute a = TupleDescAttr(s->desc, i);
        if (a->attisdropped)
            continue;
        ncols++;
        if (!s->iskey[i])
            val = i;
    }
    if (s->nkeys != 2)
        why = psprintf("It has %d key column%s, not 2 (key, then chunk_index).", s->nkeys,
                       s->nkeys == 1 ? "" : "s");
    else if (ncols != 3)
        why = psprintf("It has %d columns, not 3.", ncols);
    else if (pgsop_tuple_kind(att_type(s, s->keyatt[0] - 1)) != SOP_TUPLE_TEXT)
        why =
            psprintf("Its first key column \"%s\" is %s, not text or varchar.",
                     att_name(s, s->keyatt[0] - 1), format_type_be(att_type(s, s->keyatt[0] - 1)));
    else if (pgsop_tuple_kind(att_type(s, s->keyatt[1] - 1)) != SOP_TUPLE_INT)
        why =
            psprintf("Its second key column \"%s\" is %s, not bigint, integer or smallint.",
                     att_name(s, s->keyatt[1] - 1), format_type_be(att_type(s, s->keyatt[1] - 1)));
    else if (att_type(s, val) != BYTEAOID)
        why = psprintf("Its value column \"%s\" is %s, not bytea.", att_name(s, val),
                       format_type_be(att_type(s, val)));
    if (why)
        ereport(ERROR, (errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
                        errmsg("foreign table \"%s\" does not have the shape of a streaming table",
                               get_rel_name(s->relid)),
                        errdetail("%s", why),
                        errhint("Map streaming store \"%s\" as " STREAM_SHAPE_TEXT
                                ", the key columns in that order.",
                                s->opts.store)));
    s->streamval = val;
}

char *pgsop_describe_keys(PgSopShape *s)
{
    StringInfoData d;
    initStringInfo(&d);
    appendStringInfoString(&d, "pg_sop keys:");
    for (int k = 0; k < s->nkeys; k++) {
        Form_pg_attribute a = TupleDescAttr(s->desc, s->keyatt[k] - 1);
        appendStringInfo(&d, "%s %s %s", k ? "," : "", quote_identifier(NameStr(a->attname)),
                         format_type_be(a->atttypid));
    }
    return d.data;
}

sop_btree *pgsop_store(PgSopShape *s, PgSopConn *c)
{
    sop_btree *bt;
    sop_err err;
    sop_err_clear(&err);
    for (int k = 0; k < s->nkeys; k++) {
        Oid t = att_type(s, s->keyatt[k] - 1);
        if (!pgsop_key_type_ok(t))
            key_type_error(t);
    }
    if (s->opts.streaming)
        pgsop_check_stream_shape(s);
    sop_rc rc = sop_store_open(c->txn, s->opts.store, &bt, &err);
    if (rc == SOP_NOTFOUND && s->opts.create_if_missing) {
        sop_store_options o;
        sop_store_options_init(&o);
        o.slot_length = (uint32_t)s->opts.slot_length;
        o.is_unique = s->opts.unique;
        o.value_placement = s->opts.placement;
        o.key_order_fields = (uint32_t)s->nkeys;
        if (s->opts.streaming) {
            /* what sop_stream_create makes */
            o.streaming = true;
            o.is_unique = true;
            o.value_placement = SOP_VALUES_ACTIVE;
            o.key_order_fields = 2;
        }
        char *desc = pgsop_describe_keys(s);
        o.description = desc;
        sop_err_clear(&err);
        rc = sop_store_create(c->txn, s->opts.store, &o, &bt, &err);
        if (rc != SOP_OK)
            pgsop_error(rc, &err, "could not create store \"%s\"", s->opts.store);
        pgsop_note_write(c);
        s->stream = s->opts.streaming;
        return bt;
    }
    if (rc == SOP_NOTFOUND)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("store \"%s\" does not exist in \"%s\"", s->opts.store, c->path),
                        errhint("Create it with the table option create_if_missing 'true', or "
                                "with sop create.")));
    if (rc != SOP_OK)
        pgsop_error(rc, &err, "could not open store \"%s\"", s->opts.store);
    sop_store_info info;
    sop_err_clear(&err);
    rc = sop_db_store_info(c->db, s->opts.store, &info, &err);
    bool streaming;
    if (rc == SOP_OK) {
        streaming = info.options.streaming;
    } else {
        /* not committed yet (made earlier in this transaction): ask the
         * engine whether the open store is a streaming one */
        sop_stream *probe = NULL;
        streaming = sop_stream_open(c->txn, s->opts.store, &probe, NULL) == SOP_OK;
        sop_stream_close(probe);
    }
    if (streaming) {
        pgsop_check_stream_shape(s);
        s->stream = true;
        s->opts.unique = true;
        return bt;
    }
    if (s->opts.streaming)
        ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                        errmsg("store \"%s\" is not a streaming store", s->opts.store),
                        errhint("Drop the table option value_placement 'streaming' to map it as "
                                "it is.")));
    if (rc == SOP_OK)
        s->opts.unique = info.options.is_unique; /* the store decides, not the table */
    if (rc == SOP_OK && info.options.key_order_fields == 0) {
        s->raw = true;
        check_raw(s);
    } else if (rc == SOP_OK && (int)info.options.key_order_fields != s->nkeys) {
        ereport(ERROR, (errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
                        errmsg("store \"%s\" has %u key columns, the table %d", s->opts.store,
                               info.options.key_order_fields, s->nkeys)));
    }
    return bt;
}

/* ---- IMPORT FOREIGN SCHEMA ---------------------------------------------- */

static const char *kind_type(int kind)
{
    switch (kind) {
    case SOP_TUPLE_BOOL:
        return "boolean";
    case SOP_TUPLE_INT:
        return "bigint";
    case SOP_TUPLE_FLOAT8:
        return "double precision";
    case SOP_TUPLE_TEXT:
        return "text";
    case SOP_TUPLE_UUID:
        return "uuid";
    case SOP_TUPLE_TIMESTAMP:
        return "timestamp";
    case SOP_TUPLE_TIMESTAMPTZ:
        return "timestamptz";
    case SOP_TUPLE_DATE:
        return "date";
    default:
        return "bytea";
    }
}

char *pgsop_import_columns(const sop_store_info *info, sop_btree *bt)
{
    StringInfoData cols;
    initStringInfo(&cols);
    if (info->options.streaming)
        return pstrdup("key text OPTIONS (key 'true'), chunk_index bigint OPTIONS (key 'true'), "
                       "chunk bytea");
    if (info->options.key_order_fields == 0) {
        appendStringInfoString(&cols, "key bytea OPTIONS (key 'true'), value bytea");
        return cols.data;
    }
    sop_cursor *cur = NULL;
    sop_err err;
    sop_item it;
    bool have = false;
    if (sop_cursor_open(bt, &cur, &err) == SOP_OK && sop_cursor_first(cur, &err) == SOP_OK &&
        sop_cursor_item(cur, &it, &err) == SOP_OK)
        have = true;
    /* key columns: named by the description pg_sop wrote, else key1.. */
    const char *d = info->description;
    if (strncmp(d, "pg_sop keys:", 12) == 0) {
        char *list = pstrdup(d + 12);
        char *save = NULL;
        for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ')
                tok++;
            appendStringInfo(&cols, "%s%s OPTIONS (key 'true')", cols.len ? ", " : "", tok);
        }
    } else {
        sop_tuple_reader r;
        sop_tuple_value tv;
        if (have)
            sop_tuple_reader_init(&r, it.key, it.key_len);
        for (uint32_t k = 0; k < info->options.key_order_fields; k++) {
            int kind = have && sop_tuple_next(&r, &tv, &err) == SOP_OK ? (int)tv.type : -1;
            appendStringInfo(&cols, "%skey%u %s OPTIONS (key 'true')", k ? ", " : "", k + 1,
                             kind_type(kind));
        }
    }
    /* value columns: from the first row */
    if (have && it.value_len >= 4 && ((const uint8 *)it.value)[0] == ROW_MAGIC) {
        const uint8 *p = it.value;
        size_t vlen = it.value_len, at = 4;
        int n = p[2] | (p[3] << 8);
        for (int c = 0; c < n && at < vlen; c++) {
            int nl = p[at];
            if (at + 1 + nl + 1 > vlen)
                break;
            char *name = pnstrdup((const char *)p + at + 1, nl);
            at += 1 + nl;
            int kind = p[at++];
            char *type = NULL;
            if (kind == 1) {
                if (at >= vlen || at + 1 + p[at] > vlen)
                    break;
                type = pnstrdup((const char *)p + at + 1, p[at]);
                at += 1 + p[at];
            }
            sop_tuple_reader r;
            sop_tuple_value tv;
            sop_tuple_reader_init(&r, p + at, vlen - at);
            if (sop_tuple_next(&r, &tv, &err) != SOP_OK)
                break;
            at += r.pos;
            if (type == NULL)
                type = pstrdup(tv.type == SOP_TUPLE_NULL ? "text" : kind_type((int)tv.type));
            appendStringInfo(&cols, ", %s %s", quote_identifier(name), type);
        }
    }
    if (cur)
        sop_cursor_close(cur);
    return cols.data;
}

const char *pgsop_import_options(const sop_store_info *info)
{
    return info->options.streaming ? ", value_placement 'streaming'" : "";
}

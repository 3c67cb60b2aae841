/*
 * protobuf-c side of the wire-interop test (see include/mesh_interop.h and docs/interop.md).
 *
 * Nothing here knows a particular message type: it walks ProtobufCMessageDescriptor /
 * ProtobufCFieldDescriptor tables, reading and writing struct members at the offsets protoc-c recorded.
 * That keeps the test honest for every message, present and future, without per-type code.
 */
#include "mesh_interop.h"

#include <protobuf-c/protobuf-c.h>

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* #includes every generated header and defines MESH_INTEROP_DESCRIPTORS (proto/generate.sh). */
#include "mesh_descriptors.inc"

static const ProtobufCMessageDescriptor *const all_descriptors[] = {MESH_INTEROP_DESCRIPTORS};
#define DESCRIPTOR_COUNT (sizeof all_descriptors / sizeof all_descriptors[0])

/* Nested messages in a sample go this deep (0 is the top level). Far deeper than mesh.v1 nests (2);
 * the bound only matters for a recursive type, whose innermost field is then left unset. */
enum { SAMPLE_MAX_DEPTH = 8 };

size_t mesh_interop_message_count(void) { return DESCRIPTOR_COUNT; }

const char *mesh_interop_message_name(size_t index) {
    return index < DESCRIPTOR_COUNT ? all_descriptors[index]->name : NULL;
}

void mesh_interop_free(void *pointer) { free(pointer); }

static const ProtobufCMessageDescriptor *find_descriptor(const char *full_name) {
    if (full_name == NULL) return NULL;
    for (size_t i = 0; i < DESCRIPTOR_COUNT; i++) {
        if (strcmp(all_descriptors[i]->name, full_name) == 0) return all_descriptors[i];
    }
    return NULL;
}

/* ---- growable text ---------------------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t length;
    size_t capacity;
    int failed; /* an allocation failed; everything after is dropped */
} text;

static void text_append(text *t, const char *bytes, size_t n) {
    if (t->failed) return;
    if (t->length + n + 1 > t->capacity) {
        size_t capacity = t->capacity ? t->capacity : 256;
        while (capacity < t->length + n + 1) capacity *= 2;
        char *grown = realloc(t->data, capacity);
        if (grown == NULL) {
            t->failed = 1;
            return;
        }
        t->data = grown;
        t->capacity = capacity;
    }
    memcpy(t->data + t->length, bytes, n);
    t->length += n;
    t->data[t->length] = '\0';
}

static void text_puts(text *t, const char *s) { text_append(t, s, strlen(s)); }

static void text_printf(text *t, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(text *t, const char *format, ...) {
    char buffer[128];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(buffer, sizeof buffer, format, args);
    va_end(args);
    if (n < 0) {
        t->failed = 1;
    } else if ((size_t)n < sizeof buffer) {
        text_append(t, buffer, (size_t)n);
    } else {
        char *big = malloc((size_t)n + 1);
        if (big == NULL) {
            t->failed = 1;
            return;
        }
        va_start(args, format);
        vsnprintf(big, (size_t)n + 1, format, args);
        va_end(args);
        text_append(t, big, (size_t)n);
        free(big);
    }
}

/* A malloc'd formatted string (the reason handed back to the caller), or NULL. */
static char *format_reason(const char *format, va_list args) {
    va_list copy;
    va_copy(copy, args);
    int n = vsnprintf(NULL, 0, format, copy);
    va_end(copy);
    if (n < 0) return NULL;
    char *reason = malloc((size_t)n + 1);
    if (reason != NULL) vsnprintf(reason, (size_t)n + 1, format, args);
    return reason;
}

/* The first failure of a describe or sample run; later ones are consequences and are dropped. */
typedef struct {
    mesh_interop_status status;
    char *reason;
} failure;

static void fail(failure *f, mesh_interop_status status, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(failure *f, mesh_interop_status status, const char *format, ...) {
    if (f->status != MESH_INTEROP_OK) return;
    f->status = status;
    va_list args;
    va_start(args, format);
    f->reason = format_reason(format, args);
    va_end(args);
}

static char *copy_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy != NULL) memcpy(copy, s, n);
    return copy;
}

/* ---- field layout ----------------------------------------------------------------------------- */

static size_t element_size(ProtobufCType type) {
    switch (type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return sizeof(uint32_t);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return sizeof(uint64_t);
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        /* protoc-c forces every generated enum to int size. */
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

#define MEMBER(type, message, offset) (*(type *)((char *)(message) + (offset)))
#define CONST_MEMBER(type, message, offset) (*(type const *)((const char *)(message) + (offset)))

/*
 * protobuf-c has no flag for map fields; they are repeated fields of a synthetic nested "<Name>Entry"
 * message with exactly key = 1 and value = 2. Proto3 JSON renders maps as objects, which this harness
 * does not do yet, so they are refused loudly instead of being compared wrongly.
 */
static int is_map_field(const ProtobufCFieldDescriptor *field) {
    if (field->type != PROTOBUF_C_TYPE_MESSAGE || field->label != PROTOBUF_C_LABEL_REPEATED) return 0;
    const ProtobufCMessageDescriptor *entry = field->descriptor;
    size_t n = strlen(entry->short_name);
    return n > 5 && strcmp(entry->short_name + n - 5, "Entry") == 0 && entry->n_fields == 2 &&
           entry->fields[0].id == 1 && strcmp(entry->fields[0].name, "key") == 0 &&
           entry->fields[1].id == 2 && strcmp(entry->fields[1].name, "value") == 0;
}

/* Proto3 "zero value" of a singular field without presence; such fields are not on the wire. */
static int is_zero(const ProtobufCFieldDescriptor *field, const void *member) {
    switch (field->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return *(const uint32_t *)member == 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return *(const uint64_t *)member == 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)member == 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)member == 0;
    case PROTOBUF_C_TYPE_BOOL:
        return !*(const protobuf_c_boolean *)member;
    case PROTOBUF_C_TYPE_ENUM:
        return *(const int *)member == 0;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)member;
        return s == NULL || s[0] == '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)member)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(const ProtobufCMessage *const *)member == NULL;
    }
    return 1;
}

/* Whether a singular field is set, by the same rules protobuf-c uses when packing. */
static int singular_present(const ProtobufCMessage *message, const ProtobufCFieldDescriptor *field) {
    const void *member = (const char *)message + field->offset;
    if (field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        return CONST_MEMBER(uint32_t, message, field->quantifier_offset) == field->id;
    }
    switch (field->label) {
    case PROTOBUF_C_LABEL_REQUIRED:
        return 1;
    case PROTOBUF_C_LABEL_OPTIONAL:
        /* Strings and messages signal presence by a non-NULL, non-default pointer; the rest by has_. */
        if (field->type == PROTOBUF_C_TYPE_STRING || field->type == PROTOBUF_C_TYPE_MESSAGE) {
            const void *pointer = *(const void *const *)member;
            return pointer != NULL && pointer != field->default_value;
        }
        return CONST_MEMBER(protobuf_c_boolean, message, field->quantifier_offset) != 0;
    case PROTOBUF_C_LABEL_NONE:
        return !is_zero(field, member);
    case PROTOBUF_C_LABEL_REPEATED:
        break;
    }
    return 0;
}

/* ---- describe --------------------------------------------------------------------------------- */

typedef struct {
    text out;
    failure failure;
} describer;

static void put_json_string(text *t, const char *s) {
    text_append(t, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': text_puts(t, "\\\""); break;
        case '\\': text_puts(t, "\\\\"); break;
        case '\n': text_puts(t, "\\n"); break;
        case '\r': text_puts(t, "\\r"); break;
        case '\t': text_puts(t, "\\t"); break;
        case '\b': text_puts(t, "\\b"); break;
        case '\f': text_puts(t, "\\f"); break;
        default:
            /* UTF-8 sequences pass through unchanged; only C0 controls need escaping in JSON. */
            if (*p < 0x20) {
                text_printf(t, "\\u%04x", *p);
            } else {
                text_append(t, (const char *)p, 1);
            }
        }
    }
    text_append(t, "\"", 1);
}

static void put_base64(text *t, const uint8_t *data, size_t length) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    text_append(t, "\"", 1);
    for (size_t i = 0; i < length; i += 3) {
        uint32_t chunk = (uint32_t)data[i] << 16;
        if (i + 1 < length) chunk |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < length) chunk |= data[i + 2];
        char quad[4] = {
            alphabet[(chunk >> 18) & 63],
            alphabet[(chunk >> 12) & 63],
            i + 1 < length ? alphabet[(chunk >> 6) & 63] : '=',
            i + 2 < length ? alphabet[chunk & 63] : '=',
        };
        text_append(t, quad, 4);
    }
    text_append(t, "\"", 1);
}

/*
 * Floating point as the shortest decimal that reads back to the same value, which is what
 * swift-protobuf prints too; fixed "%.17g" would make 0.1 and 0.10000000000000001 differ as text.
 */
static void put_floating(text *t, double value, int is_float) {
    if (isnan(value)) {
        text_puts(t, "\"NaN\"");
        return;
    }
    if (isinf(value)) {
        text_puts(t, value > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    char buffer[64];
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(buffer, sizeof buffer, "%.*g", precision, value);
        if (is_float ? strtof(buffer, NULL) == (float)value : strtod(buffer, NULL) == value) break;
    }
    text_puts(t, buffer);
}

static void describe_message(describer *d, const ProtobufCMessage *message, const char *path);

static void put_value(describer *d, const ProtobufCFieldDescriptor *field, const void *member,
                      const char *path) {
    text *t = &d->out;
    switch (field->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        text_printf(t, "%" PRId32, *(const int32_t *)member);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        text_printf(t, "%" PRIu32, *(const uint32_t *)member);
        break;
    /* Proto3 JSON writes 64-bit integers as strings: a double cannot hold them exactly. */
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        text_printf(t, "\"%" PRId64 "\"", *(const int64_t *)member);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        text_printf(t, "\"%" PRIu64 "\"", *(const uint64_t *)member);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        put_floating(t, *(const float *)member, 1);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        put_floating(t, *(const double *)member, 0);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        text_puts(t, *(const protobuf_c_boolean *)member ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        int value = *(const int *)member;
        const ProtobufCEnumValue *known = protobuf_c_enum_descriptor_get_value(field->descriptor, value);
        if (known != NULL) {
            put_json_string(t, known->name);
        } else {
            text_printf(t, "%d", value);
        }
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)member;
        put_json_string(t, s != NULL ? s : "");
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bytes = member;
        put_base64(t, bytes->data, bytes->len);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        describe_message(d, *(const ProtobufCMessage *const *)member, path);
        break;
    }
}

static void describe_message(describer *d, const ProtobufCMessage *message, const char *path) {
    const ProtobufCMessageDescriptor *desc = message->descriptor;
    /* An unknown field means the C schema lacks something the sender wrote: the decode was not complete. */
    if (message->n_unknown_fields > 0) {
        fail(&d->failure, MESH_INTEROP_UNKNOWN_FIELDS,
             "%s (%s) has %u field(s) protobuf-c does not know, the first with number %" PRIu32, path,
             desc->name, message->n_unknown_fields, message->unknown_fields[0].tag);
    }
    text *t = &d->out;
    text_append(t, "{", 1);
    int first = 1;
    /* protoc-c lists fields in field-number order. */
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *field = &desc->fields[i];
        char child[512];
        if (is_map_field(field)) {
            fail(&d->failure, MESH_INTEROP_UNSUPPORTED, "%s.%s is a map field, which is not supported yet", path,
                 field->name);
            continue;
        }
        if (field->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t count = CONST_MEMBER(size_t, message, field->quantifier_offset);
            if (count == 0) continue;
            const char *array = CONST_MEMBER(char *, message, field->offset);
            if (!first) text_append(t, ",", 1);
            first = 0;
            put_json_string(t, field->name);
            text_append(t, ":[", 2);
            for (size_t e = 0; e < count; e++) {
                if (e > 0) text_append(t, ",", 1);
                snprintf(child, sizeof child, "%s.%s[%zu]", path, field->name, e);
                put_value(d, field, array + e * element_size(field->type), child);
            }
            text_append(t, "]", 1);
        } else if (singular_present(message, field)) {
            if (!first) text_append(t, ",", 1);
            first = 0;
            put_json_string(t, field->name);
            text_append(t, ":", 1);
            snprintf(child, sizeof child, "%s.%s", path, field->name);
            put_value(d, field, (const char *)message + field->offset, child);
        }
    }
    text_append(t, "}", 1);
}

mesh_interop_status mesh_interop_describe(const char *full_name, const uint8_t *bytes, size_t length,
                                          char **out_text) {
    *out_text = NULL;
    const ProtobufCMessageDescriptor *desc = find_descriptor(full_name);
    if (desc == NULL) {
        failure f = {MESH_INTEROP_OK, NULL};
        fail(&f, MESH_INTEROP_UNKNOWN_MESSAGE, "no protobuf-c descriptor named \"%s\"",
             full_name != NULL ? full_name : "(null)");
        *out_text = f.reason;
        return f.status;
    }
    /* protobuf-c reads nothing for length 0 but still wants a non-NULL pointer to be safe. */
    static const uint8_t empty[1] = {0};
    ProtobufCMessage *message = protobuf_c_message_unpack(desc, NULL, length, bytes != NULL ? bytes : empty);
    if (message == NULL) {
        failure f = {MESH_INTEROP_OK, NULL};
        fail(&f, MESH_INTEROP_DECODE_FAILED, "protobuf_c_message_unpack rejected %zu byte(s) as %s", length,
             desc->name);
        *out_text = f.reason;
        return f.status;
    }
    describer d = {{NULL, 0, 0, 0}, {MESH_INTEROP_OK, NULL}};
    describe_message(&d, message, desc->name);
    protobuf_c_message_free_unpacked(message, NULL);

    if (d.failure.status == MESH_INTEROP_OK && d.out.failed) {
        d.failure.status = MESH_INTEROP_NO_MEMORY;
        d.failure.reason = copy_string("out of memory while describing");
    }
    if (d.failure.status != MESH_INTEROP_OK) {
        free(d.out.data);
        *out_text = d.failure.reason;
        return d.failure.status;
    }
    *out_text = d.out.data;
    return MESH_INTEROP_OK;
}

/* ---- sample ----------------------------------------------------------------------------------- */

/* Every allocation of a sample message, freed together once it is packed. */
typedef struct {
    void **items;
    size_t count;
    size_t capacity;
    failure failure;
} builder;

static void *builder_alloc(builder *b, size_t size) {
    if (b->count == b->capacity) {
        size_t capacity = b->capacity ? b->capacity * 2 : 64;
        void **grown = realloc(b->items, capacity * sizeof *grown);
        if (grown == NULL) {
            fail(&b->failure, MESH_INTEROP_NO_MEMORY, "out of memory while building a sample");
            return NULL;
        }
        b->items = grown;
        b->capacity = capacity;
    }
    void *memory = calloc(1, size ? size : 1);
    if (memory == NULL) {
        fail(&b->failure, MESH_INTEROP_NO_MEMORY, "out of memory while building a sample");
        return NULL;
    }
    b->items[b->count++] = memory;
    return memory;
}

static void builder_release(builder *b) {
    for (size_t i = 0; i < b->count; i++) free(b->items[i]);
    free(b->items);
}

/* Only one member of a oneof can be set; the sample sets the one with the highest field number,
 * the member that wins when a decoder sees several ("last one wins"). */
static int later_oneof_member_exists(const ProtobufCMessageDescriptor *desc, unsigned index) {
    const ProtobufCFieldDescriptor *field = &desc->fields[index];
    for (unsigned j = index + 1; j < desc->n_fields; j++) {
        const ProtobufCFieldDescriptor *other = &desc->fields[j];
        if ((other->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && other->quantifier_offset == field->quantifier_offset) {
            return 1;
        }
    }
    return 0;
}

static ProtobufCMessage *build_message(builder *b, const ProtobufCMessageDescriptor *desc, unsigned depth,
                                       uint64_t parent_seed);

/*
 * Writes one deterministic, non-zero value for `field` into `member`. `seed` encodes the path to the
 * value (field numbers and element indexes from the top), so no two values in a sample are alike and a
 * swapped field or element shows up.
 * The values reach the awkward corners of the encoding: negative int32 (10-byte varints), 64-bit
 * integers beyond 2^53 (which JSON must carry as strings), uint32/uint64 with the top bit set, bytes
 * with 0x00 and 0xFF and every base64 padding length, strings with quotes, escapes, control characters
 * and 2-, 3- and 4-byte UTF-8. (No U+0000: protobuf-c strings are NUL-terminated and cannot hold it.)
 */
static void fill_value(builder *b, const ProtobufCMessageDescriptor *owner, const ProtobufCFieldDescriptor *field,
                       void *member, unsigned depth, uint64_t seed) {
    switch (field->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        *(int32_t *)member = -(int32_t)(seed % 1000000) - 1;
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        *(uint32_t *)member = UINT32_C(0x80000000) | (uint32_t)(seed % 1000000);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        *(int64_t *)member = -(INT64_C(1) << 53) - (int64_t)seed;
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        *(uint64_t *)member = (UINT64_C(1) << 63) | seed;
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        *(float *)member = (float)(seed % 100000) + 0.1f;
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        *(double *)member = (double)seed + 0.1;
        break;
    case PROTOBUF_C_TYPE_BOOL:
        *(protobuf_c_boolean *)member = 1;
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *e = field->descriptor;
        unsigned non_zero = 0;
        for (unsigned i = 0; i < e->n_values; i++) non_zero += e->values[i].value != 0;
        if (non_zero == 0) {
            fail(&b->failure, MESH_INTEROP_UNSUPPORTED, "%s.%s: enum %s has no non-zero value", owner->name,
                 field->name, e->name);
            break;
        }
        unsigned pick = (unsigned)(seed % non_zero);
        for (unsigned i = 0; i < e->n_values; i++) {
            if (e->values[i].value == 0) continue;
            if (pick-- == 0) {
                *(int *)member = e->values[i].value;
                break;
            }
        }
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        char buffer[512];
        snprintf(buffer, sizeof buffer, "%s.%s #%" PRIu64 " \"q\" \\ /\t\n\x01 \xc3\xa9 \xe2\x9c\x93 \xf0\x9f\xa6\x8a",
                 owner->short_name, field->name, seed);
        size_t n = strlen(buffer) + 1;
        char *s = builder_alloc(b, n);
        if (s != NULL) memcpy(s, buffer, n);
        *(char **)member = s;
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        size_t length = 3 + (size_t)(seed % 3); /* 3, 4, 5: base64 with no, two and one '=' */
        uint8_t *data = builder_alloc(b, length);
        if (data != NULL) {
            for (size_t i = 0; i < length; i++) data[i] = (uint8_t)(seed * 37 + i * 101);
            data[0] = 0x00;
            data[length - 1] = 0xFF;
        }
        ProtobufCBinaryData *bytes = member;
        bytes->len = data != NULL ? length : 0;
        bytes->data = data;
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        *(ProtobufCMessage **)member = build_message(b, field->descriptor, depth + 1, seed);
        break;
    }
}

static ProtobufCMessage *build_message(builder *b, const ProtobufCMessageDescriptor *desc, unsigned depth,
                                       uint64_t parent_seed) {
    ProtobufCMessage *message = builder_alloc(b, desc->sizeof_message);
    if (message == NULL) return NULL;
    protobuf_c_message_init(desc, message);
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *field = &desc->fields[i];
        if (is_map_field(field)) {
            fail(&b->failure, MESH_INTEROP_UNSUPPORTED, "%s.%s is a map field, which is not supported yet",
                 desc->name, field->name);
            continue;
        }
        if ((field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && later_oneof_member_exists(desc, i)) continue;
        if (field->type == PROTOBUF_C_TYPE_MESSAGE && depth + 1 > SAMPLE_MAX_DEPTH) continue;

        /* Reads as a path, three digits (field number, then element index + 1) per level: 41032 is
         * element 1 of field 3 inside element 0 of top-level field 4. Field numbers >= 100 blur the
         * digits, which costs readability only. */
        uint64_t seed = parent_seed * 1000 + (uint64_t)field->id * 10 + 1;
        if (field->label == PROTOBUF_C_LABEL_REPEATED) {
            enum { ELEMENTS = 2 };
            size_t size = element_size(field->type);
            char *array = builder_alloc(b, ELEMENTS * size);
            if (array == NULL) return message;
            for (size_t e = 0; e < ELEMENTS; e++) fill_value(b, desc, field, array + e * size, depth, seed + e);
            MEMBER(size_t, message, field->quantifier_offset) = ELEMENTS;
            MEMBER(void *, message, field->offset) = array;
        } else {
            fill_value(b, desc, field, (char *)message + field->offset, depth, seed);
            if (field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                MEMBER(uint32_t, message, field->quantifier_offset) = field->id;
            } else if (field->label == PROTOBUF_C_LABEL_OPTIONAL && field->type != PROTOBUF_C_TYPE_STRING &&
                       field->type != PROTOBUF_C_TYPE_MESSAGE) {
                MEMBER(protobuf_c_boolean, message, field->quantifier_offset) = 1;
            }
        }
    }
    return message;
}

mesh_interop_status mesh_interop_sample(const char *full_name, uint8_t **out_bytes, size_t *out_length,
                                        char **out_error) {
    *out_bytes = NULL;
    *out_length = 0;
    *out_error = NULL;
    builder b = {NULL, 0, 0, {MESH_INTEROP_OK, NULL}};
    const ProtobufCMessageDescriptor *desc = find_descriptor(full_name);
    if (desc == NULL) {
        fail(&b.failure, MESH_INTEROP_UNKNOWN_MESSAGE, "no protobuf-c descriptor named \"%s\"",
             full_name != NULL ? full_name : "(null)");
        *out_error = b.failure.reason;
        return b.failure.status;
    }
    ProtobufCMessage *message = build_message(&b, desc, 0, 0);
    if (b.failure.status == MESH_INTEROP_OK) {
        size_t size = protobuf_c_message_get_packed_size(message);
        uint8_t *bytes = malloc(size ? size : 1);
        if (bytes == NULL) {
            fail(&b.failure, MESH_INTEROP_NO_MEMORY, "out of memory while packing a sample");
        } else {
            size_t written = protobuf_c_message_pack(message, bytes);
            if (written != size) {
                free(bytes);
                fail(&b.failure, MESH_INTEROP_ENCODE_FAILED,
                     "protobuf_c_message_pack wrote %zu byte(s), get_packed_size said %zu", written, size);
            } else {
                *out_bytes = bytes;
                *out_length = size;
            }
        }
    }
    builder_release(&b);
    if (b.failure.status != MESH_INTEROP_OK) *out_error = b.failure.reason;
    return b.failure.status;
}

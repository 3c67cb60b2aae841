#ifndef MESH_INTEROP_H
#define MESH_INTEROP_H
/*
 * A protobuf-c peer for the mesh.v1 contracts, used by Tests/ProtoInteropTests to prove that what
 * Swift (swift-protobuf) puts on the bus is what a C program reads, and the other way round.
 *
 * Everything goes through protobuf-c's generic descriptor API, so one code path serves every message
 * type: messages are looked up by full name ("mesh.v1.AllocateRequest") in the table of descriptors
 * protoc-c generated (generated/mesh_descriptors.inc, written by proto/generate.sh).
 *
 * This header deliberately exposes no protobuf-c types: callers see names, bytes and text only.
 * All functions are reentrant; they keep no state between calls.
 */
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Outcome of a describe or sample call. */
typedef enum {
    MESH_INTEROP_OK = 0,
    /* No generated descriptor has that full name. */
    MESH_INTEROP_UNKNOWN_MESSAGE = 1,
    /* protobuf_c_message_unpack rejected the bytes. */
    MESH_INTEROP_DECODE_FAILED = 2,
    /* The bytes decoded, but some fields were not in C's schema (n_unknown_fields > 0 somewhere). */
    MESH_INTEROP_UNKNOWN_FIELDS = 3,
    /* A field uses something this harness does not render (map entries need a JSON object). */
    MESH_INTEROP_UNSUPPORTED = 4,
    /* malloc failed. */
    MESH_INTEROP_NO_MEMORY = 5,
    /* protobuf_c_message_pack did not write the size protobuf_c_message_get_packed_size promised. */
    MESH_INTEROP_ENCODE_FAILED = 6,
} mesh_interop_status;

/* Number of message types protoc-c generated for mesh.v1. */
size_t mesh_interop_message_count(void);

/* Full name of message type `index` (0 ..< count), e.g. "mesh.v1.Lease"; NULL past the end.
 * The string is static. */
const char *mesh_interop_message_name(size_t index);

/*
 * Decodes `length` bytes as message `full_name` with protobuf_c_message_unpack and renders every field
 * as canonical, proto3-JSON-like text: field names as in the .proto file, fields in field-number order,
 * fields at their zero value omitted, 64-bit integers as decimal strings, enums by value name (numbers
 * when the value is not in the schema), bytes as padded base64, repeated fields as arrays, messages as
 * nested objects.
 *
 * On MESH_INTEROP_OK, *out_text is the JSON text. On any other status it is a human-readable reason
 * (or NULL when even that could not be allocated). Either way the caller frees it with mesh_interop_free.
 */
mesh_interop_status mesh_interop_describe(const char *full_name, const uint8_t *bytes, size_t length,
                                          char **out_text);

/*
 * Builds a message of type `full_name` with every field set to a deterministic non-zero value derived
 * from the field number, the nesting depth and the element index (repeated fields get two elements,
 * enums a valid non-zero value, nested messages are filled recursively; of a oneof only the member with
 * the highest field number can be set) and packs it with protobuf_c_message_pack.
 *
 * On MESH_INTEROP_OK, *out_bytes / *out_length hold the wire bytes (out_bytes is never NULL, even for an
 * empty message) and *out_error is NULL. Otherwise *out_bytes is NULL and *out_error a reason.
 * The caller frees both with mesh_interop_free.
 */
mesh_interop_status mesh_interop_sample(const char *full_name, uint8_t **out_bytes, size_t *out_length,
                                        char **out_error);

/* Frees memory returned by this API. NULL is fine. */
void mesh_interop_free(void *pointer);

#ifdef __cplusplus
}
#endif
#endif

/*
 * envelope.h: the frame every node sends (internal to cluster/).
 *
 * A frame is one msgpack array of 9 elements:
 *
 *     ["phxc", version, kind, from, incarnation, seq, to, service, body]
 *
 *   "phxc"       str, the magic
 *   version      uint, CL_PROTOCOL_VERSION
 *   kind         uint, CL_K_*
 *   from         str, the sender's node name (cl_env_name_ok)
 *   incarnation  uint64, the sender's
 *   seq          uint64: 1, 2, 3... on frames to all (one sequence per
 *                sender incarnation); 0 on frames to one node
 *   to           nil (every node) or str (the addressee's name)
 *   service      uint < CL_SVC_MAX (0 when the kind has none)
 *   body         bin: DATA: the service's body; HEARTBEAT: a msgpack array
 *                of str, the sender's link address then those of the members
 *                it knows (cl_env_hb_*); GOODBYE: empty
 *
 * Encoding writes the header (all but the body's bytes) with msgpack-c's
 * packer into a small buffer; the body follows it unchanged, so a sender
 * copies a body once, into the link's message.  Decoding is a strict reader
 * of this one shape that borrows strings and the body from the frame: it
 * allocates nothing and checks every length against the bytes left
 * (msgpack-c's unpacker allocates what an array header claims, 4 G elements
 * for a 5-byte frame, before it sees they are missing).
 */
#ifndef cluster_envelope_h
#define cluster_envelope_h

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"

enum {
	CL_K_HEARTBEAT = 1,
	CL_K_DATA = 2,
	CL_K_GOODBYE = 3,
};

/* Largest header cl_env_head writes. */
#define CL_ENV_HEAD_MAX 256

/* A decoded (or to be encoded) envelope; body borrowed.  Owned by the caller
 * (a stack value). */
typedef struct cl_env {
	uint32_t version;
	int kind;
	char from[CL_NAME_MAX];
	uint64_t incarnation;
	uint64_t seq;
	char to[CL_NAME_MAX]; /* "": every node */
	int service;
	const void *body;
	size_t body_len;
} cl_env;

/* Results of cl_env_decode. */
enum {
	CL_ENV_OK = 0,
	CL_ENV_MALFORMED = -1,
	CL_ENV_BAD_VERSION = -2, /* e->version and (when readable) e->from are set */
};

/* Writes the header of e (body_len counts; body is not read) into out (at
 * least CL_ENV_HEAD_MAX bytes); returns its length, 0 when e's names are bad. */
size_t cl_env_head(const cl_env *e, uint8_t *out);

/* Reads frame into e (strings copied, body borrowed from frame).  Checks the
 * magic, version, every type, name charsets and lengths, the kind, and that
 * nothing follows the body.  Returns CL_ENV_*. */
int cl_env_decode(const void *frame, size_t len, cl_env *e);

/* True for a node name: 1 to CL_NAME_MAX - 1 bytes of letters, digits, "@._-". */
bool cl_env_name_ok(const char *s, size_t len);

/* True for a link address: 1 to CL_ADDR_MAX - 1 bytes of letters, digits and
 * ":/._-[]%+@" (enough for nng's tcp://, ipc://, inproc:// and redis URLs,
 * and safe to print in JSON). */
bool cl_env_addr_ok(const char *s, size_t len);

/* Encodes a heartbeat body (an array of the n addresses) into out (cap
 * bytes); returns its length, or 0 when it does not fit. */
size_t cl_env_hb_encode(const char *const *addrs, size_t n, uint8_t *out, size_t cap);

/* Checks a heartbeat body (an array of at most max addresses, each
 * cl_env_addr_ok, nothing after it), then, when fn is not NULL, calls fn
 * with each address (a NUL-terminated copy on the stack) in order.  Returns
 * how many addresses, or -1 when malformed (then fn was never called). */
int cl_env_hb_decode(const void *body, size_t len, size_t max,
                     void (*fn)(void *ud, size_t i, const char *addr), void *ud);

#endif /* cluster_envelope_h */

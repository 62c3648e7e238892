/*
 * rt_buf: refcounted byte buffers.
 *
 * A buffer is built by one owner (rt_buf_append*, which may move it while
 * refs == 1), then frozen by sharing: rt_buf_retain hands the same bytes to
 * many readers (the fastlane: one encoded broadcast frame, N sockets), each of
 * which calls rt_buf_release when done.  A shared buffer is immutable.
 *
 * Thread-safety: retain/release are atomic; appends are for the sole owner.
 */
#ifndef runtime_buf_h
#define runtime_buf_h

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rt_buf {
	atomic_uint refs; /* owners; freed when it drops to zero */
	uint32_t flags;   /* free for the user (e.g. the WebSocket opcode) */
	size_t len;       /* bytes used */
	size_t cap;       /* bytes allocated in data[] */
	uint8_t data[];
} rt_buf;

/* Allocates a buffer with room for cap bytes, len 0, one reference.  Never NULL (aborts on OOM). */
rt_buf *rt_buf_alloc(size_t cap);

/* A new buffer holding a copy of the n bytes at p. */
rt_buf *rt_buf_from(const void *p, size_t n);

/* Adds a reference; returns b. */
rt_buf *rt_buf_retain(rt_buf *b);

/* Drops a reference, freeing the buffer with the last one.  NULL is ignored. */
void rt_buf_release(rt_buf *b);

/* n references at once (a fan-out takes one per recipient up front: one atomic
 * operation instead of n on a cache line the recipients are releasing). */
rt_buf *rt_buf_retain_n(rt_buf *b, uint32_t n);
void rt_buf_release_n(rt_buf *b, uint32_t n);

/* Makes room for n more bytes (sole owner only); returns the possibly moved buffer. */
rt_buf *rt_buf_reserve(rt_buf *b, size_t n);

/* Appends n bytes (sole owner only); returns the possibly moved buffer. */
rt_buf *rt_buf_append(rt_buf *b, const void *p, size_t n);

/* Appends a NUL-terminated string (without the NUL). */
rt_buf *rt_buf_append_str(rt_buf *b, const char *s);

/* Appends printf-style text (without the NUL). */
rt_buf *rt_buf_appendf(rt_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* runtime_buf_h */

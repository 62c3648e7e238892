/*
 * xalloc.h: the out-of-memory policy of phx-c, and the allocation functions
 * that carry it out.
 *
 * Policy: a node that cannot allocate aborts.  Running out of memory is not
 * an error any caller handles: there is no recovery path through libev,
 * cJSON, OpenSSL and the runtime's own queues that would leave a node in a
 * state worth trusting, and a half-working node is worse than a restarted
 * one.  What keeps a node from getting there is limits elsewhere: the
 * transports bound frame and request sizes and the number of connections,
 * the channels bound what a client may send, and slow consumers are cut off
 * rather than buffered without end.  Every allocation in runtime/, channels/,
 * transports/ and bin/ goes through these functions (or checks a library's
 * NULL and calls rt_oom), so the failure always looks the same: one line on
 * stderr naming what could not be allocated, then abort().
 *
 * Thread-safety: all of them may be called from any thread.
 */
#ifndef runtime_xalloc_h
#define runtime_xalloc_h

#include <stddef.h>

/* Reports that `what` (a short description; may be NULL) could not be
 * allocated, as one line on stderr, and aborts.  Never returns. */
_Noreturn void rt_oom(const char *what, size_t size);

/* malloc(size), never NULL: aborts through rt_oom on failure.  A size of 0
 * allocates 1 byte, so that the result is always a distinct pointer. */
void *rt_xmalloc(size_t size);

/* calloc(n, size), never NULL: aborts on failure or if n * size overflows.
 * A total of 0 allocates 1 byte. */
void *rt_xcalloc(size_t n, size_t size);

/* realloc(p, size), never NULL: aborts on failure (p is then left as it
 * was).  A size of 0 reallocates to 1 byte rather than freeing p. */
void *rt_xrealloc(void *p, size_t size);

/* aligned_alloc(align, size) with size rounded up to a multiple of align,
 * never NULL: aborts on failure.  Free with free(). */
void *rt_xaligned_alloc(size_t align, size_t size);

/* strdup(s), never NULL: aborts on failure.  s must not be NULL. */
char *rt_xstrdup(const char *s);

/* strndup(s, n): a NUL-terminated copy of at most n bytes of s, never NULL:
 * aborts on failure.  s must not be NULL. */
char *rt_xstrndup(const char *s, size_t n);

#endif

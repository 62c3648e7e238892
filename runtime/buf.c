/* Refcounted byte buffers; see buf.h for the ownership rules. */
#include "runtime/buf.h"
#include "runtime/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static rt_buf *
buf_grow(rt_buf *b, size_t need)
{
	size_t cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	rt_buf *nb = rt_xrealloc(b, sizeof(*b) + cap);
	nb->cap = cap;
	return nb;
}

rt_buf *
rt_buf_alloc(size_t cap)
{
	rt_buf *b = rt_xmalloc(sizeof(*b) + cap);
	atomic_init(&b->refs, 1);
	b->flags = 0;
	b->len = 0;
	b->cap = cap;
	return b;
}

rt_buf *
rt_buf_from(const void *p, size_t n)
{
	rt_buf *b = rt_buf_alloc(n);
	memcpy(b->data, p, n);
	b->len = n;
	return b;
}

rt_buf *
rt_buf_retain(rt_buf *b)
{
	return rt_buf_retain_n(b, 1);
}

void
rt_buf_release(rt_buf *b)
{
	rt_buf_release_n(b, 1);
}

rt_buf *
rt_buf_retain_n(rt_buf *b, uint32_t n)
{
	atomic_fetch_add_explicit(&b->refs, n, memory_order_relaxed);
	return b;
}

void
rt_buf_release_n(rt_buf *b, uint32_t n)
{
	if (!b || n == 0)
		return;
	/* acq_rel: the last owner must see every other owner's reads finished. */
	if (atomic_fetch_sub_explicit(&b->refs, n, memory_order_acq_rel) == n)
		free(b);
}

rt_buf *
rt_buf_reserve(rt_buf *b, size_t n)
{
	if (b->len + n > b->cap)
		b = buf_grow(b, b->len + n);
	return b;
}

rt_buf *
rt_buf_append(rt_buf *b, const void *p, size_t n)
{
	b = rt_buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return b;
}

rt_buf *
rt_buf_append_str(rt_buf *b, const char *s)
{
	return rt_buf_append(b, s, strlen(s));
}

rt_buf *
rt_buf_appendf(rt_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return b;
	b = rt_buf_reserve(b, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return b;
}

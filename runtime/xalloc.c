/* The allocation functions of the out-of-memory policy (see xalloc.h). */
#include "runtime/xalloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn void
rt_oom(const char *what, size_t size)
{
	/* fprintf may itself need memory; the line is short and stderr is
	 * unbuffered, so in practice it gets out.  Either way we abort. */
	fprintf(stderr, "phx: out of memory: %s (%zu bytes); aborting\n",
	        what ? what : "allocation", size);
	abort();
}

void *
rt_xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);
	if (!p)
		rt_oom("malloc", size);
	return p;
}

void *
rt_xcalloc(size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		rt_oom("calloc (size overflow)", SIZE_MAX);
	if (!n || !size)
		n = size = 1;
	void *p = calloc(n, size);
	if (!p)
		rt_oom("calloc", n * size);
	return p;
}

void *
rt_xrealloc(void *p, size_t size)
{
	void *q = realloc(p, size ? size : 1);
	if (!q)
		rt_oom("realloc", size);
	return q;
}

void *
rt_xaligned_alloc(size_t align, size_t size)
{
	size_t n = size ? (size + align - 1) / align * align : align;
	void *p = aligned_alloc(align, n);
	if (!p)
		rt_oom("aligned_alloc", n);
	return p;
}

char *
rt_xstrdup(const char *s)
{
	char *d = strdup(s);
	if (!d)
		rt_oom("strdup", strlen(s) + 1);
	return d;
}

char *
rt_xstrndup(const char *s, size_t n)
{
	char *d = strndup(s, n);
	if (!d)
		rt_oom("strndup", n + 1);
	return d;
}

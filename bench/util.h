/*
 * util.h: small helpers shared by the bench tools (header-only).
 */
#ifndef bench_util_h
#define bench_util_h

#include <errno.h>
#include <stddef.h>
#include <unistd.h>

/* Writes all n bytes (retrying on EINTR); 0, or -1 on error. */
static inline int
write_all(int fd, const void *p, size_t n)
{
	const char *s = p;
	while (n) {
		ssize_t r = write(fd, s, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		s += r;
		n -= (size_t)r;
	}
	return 0;
}

#endif

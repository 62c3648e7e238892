/*
 * util.h: small helpers shared by the bench tools (header-only).
 */
#ifndef bench_util_h
#define bench_util_h

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* CLOCK_MONOTONIC in nanoseconds: every timestamp of a run is on this clock
 * (the load generator and the server share one machine). */
static inline int64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CPU time (user + system) of the calling process so far, in microseconds. */
static inline int64_t
cpu_self_us(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
	       ru.ru_stime.tv_usec;
}

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

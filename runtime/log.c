/*
 * Leveled logging to stderr: one line per call, written with a single
 * write(2) so that lines from several threads do not interleave.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/rt.h"

/* The level is process-wide configuration, set once at start (--log-level). */
static _Atomic int log_level = RT_LOG_INFO;

static const char *const level_names[] = {"error", "warning", "info", "debug"};

void
rt_log_set_level(rt_log_level level)
{
	log_level = (int)level;
}

rt_log_level
rt_log_get_level(void)
{
	return (rt_log_level)log_level;
}

void
rt_log(rt_log_level level, const char *fmt, ...)
{
	if ((int)level > log_level)
		return;
	char line[1024];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] ",
	                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	                 tm.tm_sec, ts.tv_nsec / 1000000, level_names[level]);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

/*
 * A small test harness in the shape of acutest/NUTS: each test file lists its
 * cases in TEST_LIST and includes this header once.  Every case runs in a
 * forked child (so a crash or a hang is one failed case, not a dead run), with
 * a time limit (TEST_TIMEOUT seconds, default 120).  TEST_NOFORK=1 runs cases
 * in-process, for a debugger.  The binary prints one line per case and ends
 * with "<name>: N passed, N failed"; it exits non-zero when a case failed.
 *
 * Usage:
 *     static void test_something(void) { CHECK(1 + 1 == 2); CHECK_EQ(x, 3); }
 *     TEST_LIST = { TEST(test_something), TEST_END };
 */
#ifndef test_harness_h
#define test_harness_h

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct test_case {
	const char *name;
	void (*fn)(void);
};

#define TEST(fn)                                                                                   \
	{                                                                                          \
#fn, fn                                                                            \
	}
#define TEST_END                                                                                   \
	{                                                                                          \
		NULL, NULL                                                                         \
	}
#define TEST_LIST const struct test_case test_list_[]

extern const struct test_case test_list_[];

/* Test-process state: each case runs in its own (forked) process. */
static int test_failed_;
static jmp_buf test_abort_;

static void
test_fail_(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "    %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	test_failed_ = 1;
	longjmp(test_abort_, 1);
}

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			test_fail_(__FILE__, __LINE__, "CHECK(%s) failed", #cond);                 \
	} while (0)

#define CHECK_MSG(cond, ...)                                                                       \
	do {                                                                                       \
		if (!(cond))                                                                       \
			test_fail_(__FILE__, __LINE__, __VA_ARGS__);                               \
	} while (0)

#define CHECK_EQ(a, b)                                                                             \
	do {                                                                                       \
		long long a_ = (long long)(a), b_ = (long long)(b);                                \
		if (a_ != b_)                                                                      \
			test_fail_(__FILE__, __LINE__, "CHECK_EQ(%s, %s): %lld != %lld", #a, #b,   \
			           a_, b_);                                                        \
	} while (0)

#define CHECK_STR(a, b)                                                                            \
	do {                                                                                       \
		const char *a_ = (a), *b_ = (b);                                                   \
		if (!a_ || !b_ || strcmp(a_, b_) != 0)                                             \
			test_fail_(__FILE__, __LINE__, "CHECK_STR(%s, %s): \"%s\" != \"%s\"", #a,  \
			           #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                    \
	} while (0)

#define CHECK_MEM(a, b, n)                                                                         \
	do {                                                                                       \
		if (memcmp((a), (b), (n)) != 0)                                                    \
			test_fail_(__FILE__, __LINE__, "CHECK_MEM(%s, %s, %s) differ", #a, #b,     \
			           #n);                                                            \
	} while (0)

/* Monotonic milliseconds, for wait loops in tests. */
static inline int64_t
test_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits up to ms milliseconds for cond to hold; fails the case otherwise. */
#define WAIT_UNTIL(cond, ms)                                                                       \
	do {                                                                                       \
		int64_t deadline_ = test_now_ms() + (ms);                                          \
		while (!(cond)) {                                                                  \
			if (test_now_ms() > deadline_)                                             \
				test_fail_(__FILE__, __LINE__, "timed out waiting for %s", #cond); \
			usleep(1000);                                                              \
		}                                                                                  \
	} while (0)

static int
test_run_one_(const struct test_case *tc)
{
	test_failed_ = 0;
	if (setjmp(test_abort_) == 0)
		tc->fn();
	return test_failed_;
}

int
main(int argc, char **argv)
{
	int passed = 0, failed = 0;
	const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	int nofork = getenv("TEST_NOFORK") != NULL;
	int timeout = getenv("TEST_TIMEOUT") ? atoi(getenv("TEST_TIMEOUT")) : 120;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (const struct test_case *tc = test_list_; tc->name; tc++) {
		if (argc > 1 && !strstr(tc->name, argv[1]))
			continue;
		int64_t t0 = test_now_ms();
		int bad;
		if (nofork) {
			bad = test_run_one_(tc);
		} else {
			fflush(NULL);
			pid_t pid = fork();
			if (pid == 0) {
				alarm(timeout);
				exit(test_run_one_(
				    tc)); /* exit, not _exit: LeakSanitizer checks at exit */
			}
			int st = 0;
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
			bad = !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
			if (WIFSIGNALED(st))
				fprintf(stderr, "    killed by signal %d%s\n", WTERMSIG(st),
				        WTERMSIG(st) == SIGALRM ? " (time limit)" : "");
		}
		printf("%s %s (%lld ms)\n", bad ? "FAIL" : "ok  ", tc->name,
		       (long long)(test_now_ms() - t0));
		if (bad)
			failed++;
		else
			passed++;
	}
	printf("%s: %d passed, %d failed\n", name, passed, failed);
	return failed ? 1 : 0;
}

#endif /* test_harness_h */

/*
 * Tests of bench/rawfanout, the raw fan-out reference, run as the program it
 * is (the executable built next to this test: BUILD/bench/rawfanout): one
 * process per side and -p P server processes, exact delivery counts when N is
 * not a multiple of P and M not one of --batch, the fan-out merged over the
 * processes, usage errors.
 */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test/harness.h"

#define RUN_LIMIT_MS 60000

/* BUILD/bench/rawfanout, from this test's own path BUILD/test/bench/NAME. */
static void
raw_path(char *out, size_t cap)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	CHECK(n > 0);
	exe[n] = 0;
	char *d = dirname(dirname(dirname(exe)));
	snprintf(out, cap, "%s/bench/rawfanout", d);
	CHECK_MSG(access(out, X_OK) == 0, "%s is missing (make all)", out);
}

/* Runs rawfanout with args (NULL-terminated) and --quiet --json FILE; returns
 * its exit status and, when it wrote one, the parsed JSON in *out. */
static int
run_raw(cJSON **out, const char *const *args)
{
	char bin[PATH_MAX], json[64];
	raw_path(bin, sizeof bin);
	snprintf(json, sizeof json, "/tmp/test_rawfanout.%d.json", (int)getpid());
	unlink(json);
	const char *argv[32];
	int k = 0;
	argv[k++] = bin;
	while (*args && k < 28)
		argv[k++] = *args++;
	argv[k++] = "--quiet";
	argv[k++] = "--json";
	argv[k++] = json;
	argv[k] = NULL;
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 1);
		dup2(devnull, 2);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	int st = 0;
	int64_t deadline = test_now_ms() + RUN_LIMIT_MS;
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (test_now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			CHECK_MSG(0, "rawfanout ran longer than %d ms", RUN_LIMIT_MS);
		}
		usleep(10000);
	}
	*out = NULL;
	FILE *f = fopen(json, "r");
	if (f) {
		static char buf[8192];
		size_t n = fread(buf, 1, sizeof buf - 1, f);
		buf[n] = 0;
		fclose(f);
		*out = cJSON_Parse(buf);
		unlink(json);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static double
num(const cJSON *j, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
	CHECK_MSG(cJSON_IsNumber(v), "no number %s", key);
	return v->valuedouble;
}

static double
pct(const cJSON *j, const char *obj, const char *key)
{
	return num(cJSON_GetObjectItemCaseSensitive(j, obj), key);
}

/* Every payload arrives exactly once, nothing is lost or malformed. */
static void
check_complete(const cJSON *j, double n, double m, double procs)
{
	CHECK(j != NULL);
	CHECK(num(j, "n") == n);
	CHECK(num(j, "messages") == m);
	CHECK(num(j, "procs") == procs);
	CHECK(num(j, "expected") == n * m);
	CHECK(num(j, "deliveries") == n * m);
	CHECK(num(j, "lost") == 0);
	CHECK(num(j, "malformed") == 0);
	CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "timed_out")));
	CHECK(pct(j, "latency_ms", "count") == n * m);
	CHECK(pct(j, "fanout_ms", "count") == m);
	/* a message's fan-out (latest receipt - earliest start) is at least the
	 * latency of each of its receipts (that receipt - its own server's start) */
	CHECK(pct(j, "fanout_ms", "max") >= pct(j, "latency_ms", "max"));
	CHECK(num(j, "deliveries_per_s") > 0);
}

static void
test_one_process(void)
{
	cJSON *j;
	const char *args[] = {"-n", "50", "-m", "20", NULL};
	CHECK_EQ(run_raw(&j, args), 0);
	check_complete(j, 50, 20, 1);
	CHECK(pct(j, "send_loop_ms", "count") == 20);
	cJSON_Delete(j);
}

static void
test_six_processes_uneven(void)
{
	cJSON *j;
	/* 101 clients over 6 servers: 17, 17, 17, 17, 17, 16 */
	const char *args[] = {"-p", "6", "-n", "101", "-m", "30", "--rate", "300", NULL};
	CHECK_EQ(run_raw(&j, args), 0);
	check_complete(j, 101, 30, 6);
	/* one send loop per message per server */
	CHECK(pct(j, "send_loop_ms", "count") == 6 * 30);
	/* paced at 300/s from the common start: the last of 30 messages is not
	 * sent before 29 / 300 s (a server that starts late only sends later) */
	CHECK_MSG(num(j, "since_go_s") >= 29.0 / 300, "%f", num(j, "since_go_s"));
	cJSON_Delete(j);
}

static void
test_processes_with_batches(void)
{
	cJSON *j;
	/* 50 messages in batches of 16: 16, 16, 16, 2 */
	const char *args[] = {"-p", "3", "-n", "31", "-m", "50", "--batch", "16", NULL};
	CHECK_EQ(run_raw(&j, args), 0);
	check_complete(j, 31, 50, 3);
	CHECK(pct(j, "send_loop_ms", "count") == 3 * 4);
	cJSON_Delete(j);
}

static void
test_usage_errors(void)
{
	cJSON *j;
	const char *zero[] = {"-p", "0", NULL};
	CHECK_EQ(run_raw(&j, zero), 2);
	CHECK(j == NULL);
	const char *more_than_clients[] = {"-p", "5", "-n", "4", NULL};
	CHECK_EQ(run_raw(&j, more_than_clients), 2);
	CHECK(j == NULL);
	const char *too_many[] = {"-p", "65", "-n", "1000", NULL};
	CHECK_EQ(run_raw(&j, too_many), 2);
	CHECK(j == NULL);
}

TEST_LIST = {
    TEST(test_one_process),
    TEST(test_six_processes_uneven),
    TEST(test_processes_with_batches),
    TEST(test_usage_errors),
    TEST_END,
};

/*
 * Test support: a real redis-server for one test case, started on a port
 * and killed at the end of the case (or when the case process exits, or
 * dies: PR_SET_PDEATHSIG).  Include after test/harness.h.
 */
#ifndef test_redis_server_h
#define test_redis_server_h

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include "test/support/ports.h"

/* The redis-server of the running case: a global so that the atexit
 * handler can kill it when a CHECK fails half-way (each case is a process). */
static pid_t redis_pid;
static int redis_port;

static void
redis_kill(void)
{
	if (redis_pid > 0) {
		kill(redis_pid, SIGKILL);
		waitpid(redis_pid, NULL, 0);
		redis_pid = 0;
	}
}

static bool
redis_ping(int port)
{
	struct timeval tv = {0, 200000};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	bool ok = false;
	if (c && !c->err) {
		redisSetTimeout(c, tv);
		redisReply *r = redisCommand(c, "PING");
		ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
		if (r)
			freeReplyObject(r);
	}
	if (c)
		redisFree(c);
	return ok;
}

/* Starts redis-server on port and waits until it answers. */
static void
redis_start(int port)
{
	static bool registered;
	if (!registered) {
		atexit(redis_kill);
		registered = true;
	}
	pid_t parent = getpid();
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		FILE *null = freopen("/dev/null", "w", stdout);
		(void)null;
		char p[16];
		snprintf(p, sizeof p, "%d", port);
		execl("/usr/bin/redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1",
		      "--save", "", "--appendonly", "no", "--daemonize", "no", (char *)NULL);
		_exit(127);
	}
	redis_pid = pid;
	redis_port = port;
	WAIT_UNTIL(redis_ping(port), 10000);
}

#endif /* test_redis_server_h */

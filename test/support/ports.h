/*
 * Test support: a TCP port of 127.0.0.1 that is free now (for servers and
 * nodes that must know a port before they start).  Include after
 * test/harness.h.
 */
#ifndef test_ports_h
#define test_ports_h

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* A port free now on 127.0.0.1 (bound, read back, closed). */
static int
free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	CHECK(bind(s, (struct sockaddr *)&a, sizeof a) == 0);
	socklen_t al = sizeof a;
	CHECK(getsockname(s, (struct sockaddr *)&a, &al) == 0);
	close(s);
	return ntohs(a.sin_port);
}

#endif /* test_ports_h */

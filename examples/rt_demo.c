/*
 * A runtime demo: a supervised ring of processes passing a token, with one
 * member crashing now and then and being restarted by its supervisor.  Runs
 * until SIGINT/SIGTERM.
 */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "runtime/rt.h"

enum { TOKEN = 1 };

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

typedef struct member {
	int index;
} member;

static int
member_init(void *state, const void *arg, size_t size)
{
	(void)size;
	member *m = state;
	m->index = *(const int *)arg;
	char name[16];
	snprintf(name, sizeof(name), "ring-%d", m->index);
	return rt_register(name) == 0 ? RT_OK : rt_stop("name taken");
}

static int
member_handle(void *state, rt_msg *msg)
{
	member *m = state;
	if (msg->tag != TOKEN)
		return RT_OK;
	uint64_t hops = *(uint64_t *)rt_msg_data(msg) + 1;
	if (m->index == 3 && hops % 500000 == 0)
		rt_crash("member 3 crashes on purpose after %llu hops", (unsigned long long)hops);
	char next[16];
	snprintf(next, sizeof(next), "ring-%d", (m->index + 1) % 8);
	rt_pid to = rt_whereis(next);
	if (to)
		rt_send(to, TOKEN, &hops, sizeof(hops));
	else /* the next member is restarting: pass the token back to ourselves */
		rt_send_after(10, rt_self(), TOKEN, &hops, sizeof(hops));
	if (hops % 1000000 == 0)
		rt_log_info("token passed %llu hops", (unsigned long long)hops);
	return RT_OK;
}

static const rt_behaviour member_behaviour = {.name = "ring_member",
                                              .state_size = sizeof(member),
                                              .init = member_init,
                                              .handle = member_handle};

int
main(void)
{
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	rt_config cfg = {.log_level = RT_LOG_INFO};
	if (rt_start(&cfg) != 0)
		return 1;
	int idx[8];
	rt_child_spec kids[8];
	for (int i = 0; i < 8; i++) {
		idx[i] = i;
		kids[i] = (rt_child_spec){.id = "member",
		                          .behaviour = &member_behaviour,
		                          .arg = &idx[i],
		                          .arg_size = sizeof(int),
		                          .restart = RT_PERMANENT,
		                          .shutdown_ms = 100};
	}
	rt_sup_spec spec = {.strategy = RT_ONE_FOR_ONE,
	                    .intensity = 10,
	                    .period_ms = 1000,
	                    .children = kids,
	                    .nchildren = 8};
	rt_pid sup = rt_sup_start(&spec);
	rt_log_info("runtime demo: 8 supervised processes on %d schedulers; Ctrl-C to stop",
	            rt_schedulers());
	while (!rt_whereis("ring-0"))
		usleep(1000);
	uint64_t zero = 0;
	rt_send(rt_whereis("ring-0"), TOKEN, &zero, sizeof(zero));
	while (!stop_requested)
		pause();
	rt_exit(sup, "shutdown");
	while (rt_alive(sup))
		usleep(1000);
	rt_shutdown();
	return 0;
}

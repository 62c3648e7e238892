/*
 * bin/node_api: GET /api/cluster and GET /api/stats (see node_api.h).
 */
#include "bin/node_api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cluster/cluster.h"

#define CLUSTER_JSON_MAX 65536 /* /api/cluster: 64 members fit well within */
#define STATS_JSON_MAX 2048

static void
answer_static(tp_response *resp, int status, const char *json, size_t len)
{
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = rt_buf_from(json, len);
}

#define ANSWER(resp, status, lit) answer_static(resp, status, lit, sizeof(lit) - 1)

static void
get_cluster(const tp_http_request *req, tp_response *resp, void *udata)
{
	(void)req;
	const node_api *api = udata;
	cl_node *c = ch_endpoint_cluster(api->channels);
	if (!c) {
		ANSWER(resp, 200, "{\"name\":\"nonode@nohost\",\"members\":[]}");
		return;
	}
	char *buf = malloc(CLUSTER_JSON_MAX);
	size_t n = buf ? cl_stats_json(c, buf, CLUSTER_JSON_MAX) : 0;
	if (n > 0)
		answer_static(resp, 200, buf, n);
	else
		ANSWER(resp, 500, "{\"error\":\"cannot write the cluster's state\"}");
	free(buf);
}

/* The resident set in bytes (/proc/self/statm), or 0. */
static uint64_t
rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long long size = 0, resident = 0;
	int got = f ? fscanf(f, "%llu %llu", &size, &resident) : 0;
	if (f)
		fclose(f);
	long page = sysconf(_SC_PAGESIZE);
	return got == 2 && page > 0 ? (uint64_t)resident * (uint64_t)page : 0;
}

static void
get_stats(const tp_http_request *req, tp_response *resp, void *udata)
{
	(void)req;
	node_api *api = udata;
	tp_endpoint *tp = atomic_load(&api->transport);
	if (!tp) {
		ANSWER(resp, 503, "{\"error\":\"the endpoint is starting\"}");
		return;
	}
	tp_stats s;
	tp_endpoint_stats(tp, &s);
	char buf[STATS_JSON_MAX];
#define U(x) ((unsigned long long)(x))
	int n = snprintf(
	    buf, sizeof(buf),
	    "{\"rss\":%llu,"
	    "\"connections\":{\"accepted\":%llu,\"open\":%llu,\"websockets_open\":%llu,"
	    "\"accept_paused\":%llu,\"drained\":%llu},"
	    "\"http\":{\"requests\":%llu,\"parsed\":%llu},"
	    "\"closed\":{\"slow_consumers\":%llu,\"1002\":%llu,\"1007\":%llu,\"1009\":%llu,"
	    "\"1011\":%llu,\"flood_1008\":%llu},"
	    "\"longpoll\":{\"open\":%llu,\"opened\":%llu,\"expired\":%llu,\"slow\":%llu,"
	    "\"binary_dropped\":%llu,\"refused\":%llu,\"lines_ignored\":%llu,\"bad_posts\":%llu,"
	    "\"remote_sent\":%llu,\"remote_served\":%llu,\"remote_refused\":%llu,"
	    "\"remote_lost\":%llu},"
	    "\"tls\":{\"accepted\":%llu,\"handshakes\":%llu,\"failed\":%llu},"
	    "\"memory_budget\":{\"over_now\":%llu,\"refused\":%llu,\"cut\":%llu}}",
	    U(rss_bytes()), U(s.accepted), U(s.open), U(s.ws_open), U(s.accept_paused),
	    U(s.drained), U(s.http_requests), U(s.http_parsed), U(s.slow_disconnects),
	    U(s.closed_1002), U(s.closed_1007), U(s.closed_1009), U(s.closed_1011),
	    U(ch_endpoint_flood_closed(api->channels)), U(s.lp_open), U(s.lp_opened),
	    U(s.lp_expired), U(s.lp_slow), U(s.lp_binary_dropped), U(s.lp_refused),
	    U(s.lp_lines_ignored), U(s.lp_bad_posts), U(s.lp_remote_sent), U(s.lp_remote_served),
	    U(s.lp_remote_refused), U(s.lp_remote_lost), U(s.tls_accepted), U(s.tls_handshakes),
	    U(s.tls_failed), U(s.mem_over), U(s.mem_refused), U(s.mem_cut));
#undef U
	if (n > 0 && (size_t)n < sizeof(buf))
		answer_static(resp, 200, buf, (size_t)n);
	else
		ANSWER(resp, 500, "{\"error\":\"cannot write the stats\"}");
}

void
node_api_routes(node_api *api, tp_route out[NODE_API_NROUTES])
{
	out[0] = (tp_route){"GET", "/api/cluster", get_cluster, api};
	out[1] = (tp_route){"GET", "/api/stats", get_stats, api};
}

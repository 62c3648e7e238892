/*
 * bin/node_api: the HTTP routes the launcher adds to every app, about the
 * node itself (not part of Phoenix's wire; an operator's view):
 *
 *   GET /api/cluster  the cluster's name, members and bus counters
 *                     (cl_stats_json), or {"name":"nonode@nohost",
 *                     "members":[]} for a node that is alone;
 *   GET /api/stats    the transports' counters (tp_stats: connections,
 *                     WebSockets, long-poll sessions, TLS, drain, the limits
 *                     and what they refused or cut), the sockets closed by the
 *                     flood limit, and the process's RSS.
 *
 * An app's own route of the same path comes first and wins.
 */
#ifndef bin_node_api_h
#define bin_node_api_h

#include <stdatomic.h>

#include "channels/channels.h"
#include "transports/transports.h"

/* The routes' shared state.  Owned by the launcher's main thread, which
 * sets channels before the endpoint starts and transport once it listens;
 * the handlers (scheduler threads) only read it. */
typedef struct node_api {
	ch_endpoint *channels;
	_Atomic(tp_endpoint *) transport; /* NULL until the endpoint listens */
} node_api;

#define NODE_API_NROUTES 2

/* Writes the routes above into out[0 .. NODE_API_NROUTES - 1], each with
 * api as its udata; api must outlive the endpoint that serves them. */
void node_api_routes(node_api *api, tp_route out[NODE_API_NROUTES]);

#endif /* bin_node_api_h */

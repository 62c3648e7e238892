/*
 * Phoenix.Presence on the tracker (channels/tracker.c): phx_ref stamping,
 * the {key: {"metas": [...]}} shape of presence_state, get_by_key and
 * presence_diff, the app's fetch hook, and the presence_diff broadcasts.
 *
 * Any process (or thread) may track any pid in any topic; the tracker
 * monitors it, so a tracked process's exit, whatever its reason, is a leave
 * and channel code knows nothing of presence.
 *
 * Timing: the tracker coalesces a topic's joins and leaves over its period
 * (ch_endpoint_opts.presence_period_ms, 20 ms by default) and this file
 * turns each batch into one presence_diff {"joins": {...}, "leaves": {...}}
 * to the topic's local subscribers.  Phoenix.Presence sends one diff per
 * change, at once; the phoenix.js Presence class applies either the same.
 * A presence_state read from a channel (ch_presence_list) shows its own
 * track already, and the diffs that follow it are consistent with it: a
 * change that the state shows may also come as a diff (its join is
 * idempotent in syncDiff, its leave too), and a change it does not show
 * always comes as a diff after it, since the channel was subscribed before.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channels/b64.h"
#include "channels/internal.h"
#include "channels/tracker.h"

/* Owner: the endpoint (created by presence_start, freed by presence_stop);
 * the fetch hook may be set from any thread. */
struct ch_presence {
	ch_endpoint *ep;
	trk_tracker *trk;
	_Atomic(ch_presence_fetch_fn) fetch;
	void *_Atomic fetch_ud;
};

/* ------------------------------------------------------------------ refs and metas */

/* A phx_ref the shape of Phoenix's: 12 bytes (time in ns, a hash of the
 * process, a counter) in URL-safe base64, 16 characters. */
static void
make_ref(char out[CH_PRESENCE_REF_MAX])
{
	static _Atomic uint32_t counter;
	uint64_t ns = (uint64_t)rt_wall_ms() * 1000000u + (uint64_t)(rt_now_ns() % 1000000);
	uint32_t who = (uint32_t)(rt_self() * 0x9e3779b97f4a7c15ull >> 48);
	uint32_t c = atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
	unsigned char r[12];
	for (int i = 0; i < 8; i++)
		r[i] = (unsigned char)(ns >> (56 - 8 * i));
	r[8] = (unsigned char)(who >> 8);
	r[9] = (unsigned char)who;
	r[10] = (unsigned char)(c >> 8);
	r[11] = (unsigned char)c;
	_Static_assert(CH_PRESENCE_REF_MAX > CH_B64URL_LEN(sizeof(r)), "a ref fits");
	out[ch_b64url_encode(r, sizeof(r), out)] = 0;
}

static void
set_string(cJSON *obj, const char *name, const char *value)
{
	cJSON_DeleteItemFromObjectCaseSensitive(obj, name);
	cJSON_AddStringToObject(obj, name, value);
}

static int
cmp_item(const void *a, const void *b)
{
	return strcmp((*(cJSON *const *)a)->string, (*(cJSON *const *)b)->string);
}

/* Orders an object's members by key, as Erlang orders a small map's keys
 * (and so as Phoenix's JSON shows a meta). */
static void
sort_members(cJSON *obj)
{
	int n = cJSON_GetArraySize(obj);
	if (n < 2 || n > 32)
		return;
	cJSON *v[32];
	int i = 0;
	for (cJSON *c = obj->child; c; c = c->next)
		v[i++] = c;
	qsort(v, (size_t)n, sizeof(v[0]), cmp_item);
	obj->child = v[0];
	for (i = 0; i < n; i++) {
		v[i]->prev = v[i ? i - 1 : n - 1]; /* cJSON: the head's prev is the tail */
		v[i]->next = i + 1 < n ? v[i + 1] : NULL;
	}
}

/* meta_json (a JSON object) with "phx_ref": ref, as text; NULL when it is
 * not an object. */
static char *
stamp_meta(const char *meta_json, const char *ref)
{
	cJSON *meta = cJSON_Parse(meta_json ? meta_json : "{}");
	if (!cJSON_IsObject(meta)) {
		cJSON_Delete(meta);
		return NULL;
	}
	set_string(meta, "phx_ref", ref);
	sort_members(meta);
	char *text = cJSON_PrintUnformatted(meta);
	cJSON_Delete(meta);
	return text;
}

/* trk_update's make_meta, in the shard: the new meta with "phx_ref_prev" set
 * to the old meta's phx_ref, as Phoenix's put_update does. */
static char *
meta_with_prev(const char *old_meta, const char *meta)
{
	cJSON *old = cJSON_Parse(old_meta);
	cJSON *m = cJSON_Parse(meta);
	char *text = NULL;
	const cJSON *ref = cJSON_GetObjectItemCaseSensitive(old, "phx_ref");
	if (cJSON_IsObject(m) && cJSON_IsString(ref)) {
		set_string(m, "phx_ref_prev", ref->valuestring);
		sort_members(m);
		text = cJSON_PrintUnformatted(m);
	}
	cJSON_Delete(old);
	cJSON_Delete(m);
	return text;
}

static int
map_err(int rc)
{
	switch (rc) {
	case 0:
		return 0;
	case TRK_EEXIST:
		return CH_PRESENCE_EEXIST;
	case TRK_ENOENT:
		return CH_PRESENCE_ENOENT;
	case TRK_EBUSY:
		return CH_PRESENCE_EBUSY;
	default:
		return CH_PRESENCE_EINVAL;
	}
}

/* ------------------------------------------------------------------ JSON shapes */

/* Applies the fetch hook to a {key: {"metas": [...]}} text; returns it or
 * its replacement (malloc'd either way). */
static char *
fetched(ch_presence *pr, const char *topic, char *json)
{
	ch_presence_fetch_fn fn = atomic_load(&pr->fetch);
	if (!fn)
		return json;
	cJSON *obj = cJSON_Parse(json);
	if (!obj)
		return json;
	fn(topic, obj, atomic_load(&pr->fetch_ud));
	char *out = cJSON_PrintUnformatted(obj);
	cJSON_Delete(obj);
	if (!out)
		return json;
	free(json);
	return out;
}

/* Builds {key: {"metas": [...]}, ...} from a visit grouped by key.  Up to
 * 32 keys, the groups are put in key order at the end (Erlang's order for
 * a small map, so Phoenix's JSON order); past that Phoenix's order is a
 * hash's, and ours is the order keys arrived in.  On the caller's stack. */
#define SMALL_MAP 32

typedef struct grouper {
	rt_buf *b;
	size_t groups;
	struct group_pos {
		char *key;    /* a copy */
		size_t start; /* offset of the group's text in b */
		size_t len;   /* its length, comma excluded */
	} pos[SMALL_MAP + 1];
} grouper;

static bool
group_visit(void *ud, const char *key, const char *meta, rt_pid pid, bool first_of_key)
{
	grouper *g = ud;
	(void)pid;
	if (first_of_key) {
		if (g->groups)
			g->b = rt_buf_append_str(g->b, "]},");
		if (g->groups <= SMALL_MAP) {
			g->pos[g->groups].key = rt_xstrdup(key);
			g->pos[g->groups].start = g->b->len;
		}
		g->groups++;
		ch_json_append_string(&g->b, key, strlen(key));
		g->b = rt_buf_append_str(g->b, ":{\"metas\":[");
	} else {
		g->b = rt_buf_append(g->b, ",", 1);
	}
	g->b = rt_buf_append_str(g->b, meta);
	return true;
}

static int
cmp_pos(const void *a, const void *b)
{
	return strcmp(((const struct group_pos *)a)->key, ((const struct group_pos *)b)->key);
}

/* Closes the object (the groups started at offset `open`, just after its
 * "{"), in key order when small; frees the key copies. */
static void
group_close(grouper *g, size_t open)
{
	if (g->groups)
		g->b = rt_buf_append_str(g->b, "]}");
	size_t n = g->groups <= SMALL_MAP ? g->groups : 0;
	if (n > 1) {
		size_t end = g->b->len;
		for (size_t i = 0; i < n; i++)
			g->pos[i].len =
			    (i + 1 < n ? g->pos[i + 1].start - 1 : end) - g->pos[i].start;
		struct group_pos sorted[SMALL_MAP];
		memcpy(sorted, g->pos, n * sizeof(sorted[0]));
		qsort(sorted, n, sizeof(sorted[0]), cmp_pos);
		char *copy = rt_xmalloc(end - open);
		size_t at = 0;
		for (size_t i = 0; i < n; i++) {
			if (i)
				copy[at++] = ',';
			memcpy(copy + at, g->b->data + sorted[i].start, sorted[i].len);
			at += sorted[i].len;
		}
		memcpy(g->b->data + open, copy, at);
		free(copy);
	}
	for (size_t i = 0; i < g->groups && i <= SMALL_MAP; i++)
		free(g->pos[i].key);
}

static char *
buf_to_str(rt_buf *b)
{
	char *s = rt_xmalloc(b->len + 1);
	memcpy(s, b->data, b->len);
	s[b->len] = 0;
	rt_buf_release(b);
	return s;
}

static char *
list_json(ch_presence *pr, const char *topic)
{
	grouper g = {.b = rt_buf_alloc(256)};
	g.b = rt_buf_append(g.b, "{", 1);
	trk_list(pr->trk, topic, NULL, group_visit, &g);
	group_close(&g, 1);
	g.b = rt_buf_append(g.b, "}", 1);
	return fetched(pr, topic, buf_to_str(g.b));
}

/* A diff item and its position (for a stable sort); caller's stack. */
typedef struct keyed {
	const trk_item *item;
	size_t seq;
} keyed;

static int
cmp_keyed(const void *a, const void *b)
{
	const keyed *x = a, *y = b;
	int c = strcmp(x->item->key, y->item->key);
	if (c)
		return c;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* {key: {"metas": [...]}} of a list of items, grouped by key in order. */
static char *
items_json(const trk_item *items, size_t n)
{
	keyed *v = rt_xmalloc((n ? n : 1) * sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = (keyed){&items[i], i};
	qsort(v, n, sizeof(*v), cmp_keyed);
	grouper g = {.b = rt_buf_alloc(64 + 96 * n)};
	g.b = rt_buf_append(g.b, "{", 1);
	for (size_t i = 0; i < n; i++)
		group_visit(&g, v[i].item->key, v[i].item->meta, RT_NOPID,
		            i == 0 || strcmp(v[i].item->key, v[i - 1].item->key) != 0);
	group_close(&g, 1); /* already in key order */
	g.b = rt_buf_append(g.b, "}", 1);
	free(v);
	return buf_to_str(g.b);
}

/* trk_diff_fn: one presence_diff per topic per period, to local subscribers. */
static void
presence_diff(void *ud, const char *topic, const trk_item *joins, size_t njoins,
              const trk_item *leaves, size_t nleaves)
{
	ch_presence *pr = ud;
	char *j = fetched(pr, topic, items_json(joins, njoins));
	char *l = fetched(pr, topic, items_json(leaves, nleaves));
	rt_buf *b = rt_buf_alloc(strlen(j) + strlen(l) + 32);
	b = rt_buf_append_str(b, "{\"joins\":");
	b = rt_buf_append_str(b, j);
	b = rt_buf_append_str(b, ",\"leaves\":");
	b = rt_buf_append_str(b, l);
	b = rt_buf_append(b, "}", 2);
	pubsub_local_broadcast(pr->ep->pubsub, RT_NOPID, topic, "presence_diff",
	                       (const char *)b->data, b->len - 1);
	rt_buf_release(b);
	free(j);
	free(l);
}

/* ------------------------------------------------------------------ lifecycle */

ch_presence *
presence_start(ch_endpoint *ep, const ch_endpoint_opts *opts)
{
	ch_presence *pr = rt_xcalloc(1, sizeof(*pr));
	pr->ep = ep;
	trk_opts to = {
	    .shards = opts ? opts->presence_shards : 0,
	    .period_ms = opts ? opts->presence_period_ms : 0,
	    .max_pending = opts ? opts->presence_max_pending : 0,
	    .diff = presence_diff,
	    .ud = pr,
	    .parent = ch_endpoint_supervisor(ep),
	    /* replicated to the other nodes when the endpoint is clustered (it
	     * starts the cluster before, and stops it after the tracker's
	     * processes and before presence_stop frees the tracker) */
	    .cluster = ch_endpoint_cluster(ep),
	    .broadcast_ms = opts ? opts->presence_broadcast_ms : 0,
	    .down_ms = opts ? opts->presence_down_ms : 0,
	    .permdown_ms = opts ? opts->presence_permdown_ms : 0,
	};
	pr->trk = trk_start(&to);
	if (!pr->trk) {
		free(pr);
		return NULL;
	}
	return pr;
}

void
presence_stop(ch_presence *pr)
{
	if (!pr)
		return;
	trk_stop(pr->trk);
	free(pr);
}

rt_pid
presence_sup(const ch_presence *pr)
{
	return pr ? trk_sup(pr->trk) : RT_NOPID;
}

trk_tracker *
presence_tracker(const ch_presence *pr)
{
	return pr ? pr->trk : NULL;
}

/* ------------------------------------------------------------------ API */

/* Track (update false) or update: a fresh phx_ref stamped into the meta. */
static int
track_or_update(ch_endpoint *ep, rt_pid pid, const char *topic, const char *key,
                const char *meta_json, char *ref_out, bool update)
{
	char ref[CH_PRESENCE_REF_MAX];
	make_ref(ref);
	char *meta = stamp_meta(meta_json, ref);
	if (!meta)
		return CH_PRESENCE_EINVAL;
	trk_tracker *t = ep->presence->trk;
	int rc = map_err(update ? trk_update(t, pid, topic, key, meta, meta_with_prev)
	                        : trk_track(t, pid, topic, key, meta));
	free(meta);
	if (rc == 0 && ref_out)
		memcpy(ref_out, ref, strlen(ref) + 1);
	return rc;
}

int
ch_presence_track_pid(ch_endpoint *ep, rt_pid pid, const char *topic, const char *key,
                      const char *meta_json, char *ref_out)
{
	return track_or_update(ep, pid, topic, key, meta_json, ref_out, false);
}

int
ch_presence_update_pid(ch_endpoint *ep, rt_pid pid, const char *topic, const char *key,
                       const char *meta_json, char *ref_out)
{
	return track_or_update(ep, pid, topic, key, meta_json, ref_out, true);
}

int
ch_presence_untrack_pid(ch_endpoint *ep, rt_pid pid, const char *topic, const char *key)
{
	return map_err(trk_untrack(ep->presence->trk, pid, topic, key));
}

int
ch_presence_untrack_all(ch_endpoint *ep, rt_pid pid)
{
	return map_err(trk_untrack_all(ep->presence->trk, pid));
}

char *
ch_presence_list_topic(ch_endpoint *ep, const char *topic)
{
	return list_json(ep->presence, topic);
}

char *
ch_presence_get_by_key(ch_endpoint *ep, const char *topic, const char *key)
{
	grouper g = {.b = rt_buf_alloc(128)};
	g.b = rt_buf_append(g.b, "{", 1);
	trk_list(ep->presence->trk, topic, key, group_visit, &g);
	if (!g.groups) {
		rt_buf_release(g.b);
		return NULL;
	}
	group_close(&g, 1);
	g.b = rt_buf_append(g.b, "}", 1);
	/* {key: {"metas": [...]}} through the hook, then the key's value */
	char *all = fetched(ep->presence, topic, buf_to_str(g.b));
	cJSON *obj = cJSON_Parse(all);
	free(all);
	cJSON *one = cJSON_DetachItemFromObjectCaseSensitive(obj, key);
	char *out = one ? cJSON_PrintUnformatted(one) : NULL;
	cJSON_Delete(one);
	cJSON_Delete(obj);
	return out;
}

size_t
ch_presence_count(ch_endpoint *ep, const char *topic, size_t *nkeys)
{
	return trk_count(ep->presence->trk, topic, nkeys);
}

void
ch_presence_set_fetch(ch_endpoint *ep, ch_presence_fetch_fn fn, void *ud)
{
	atomic_store(&ep->presence->fetch_ud, ud);
	atomic_store(&ep->presence->fetch, fn);
}

int
ch_presence_track(ch_chan *ch, const char *key, const char *meta_json)
{
	return ch_presence_track_pid(ch_endpoint_of(ch), rt_self(), ch_topic(ch), key, meta_json,
	                             NULL);
}

int
ch_presence_update(ch_chan *ch, const char *key, const char *meta_json)
{
	return ch_presence_update_pid(ch_endpoint_of(ch), rt_self(), ch_topic(ch), key, meta_json,
	                              NULL);
}

int
ch_presence_untrack(ch_chan *ch, const char *key)
{
	return ch_presence_untrack_pid(ch_endpoint_of(ch), rt_self(), ch_topic(ch), key);
}

char *
ch_presence_list(ch_chan *ch)
{
	return list_json(ch_endpoint_of(ch)->presence, ch_topic(ch));
}

/*
 * Phoenix.Presence on one node: who is in each topic, with metas.
 *
 * Entries (topic, key, channel pid, phx_ref, meta) live in a per-endpoint
 * table of topics under one mutex.  Tracking broadcasts a presence_diff
 * {"joins": {key: {"metas": [meta]}}, "leaves": {}} to the topic, and the
 * exit of a tracked channel process (its terminate, which runs for every
 * exit) broadcasts the matching leaves, so the phoenix.js Presence class
 * works unchanged.  Replication across nodes (Phoenix.Tracker's CRDT) comes
 * with the cluster.
 */
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channels/internal.h"
#include "runtime/hash.h"

typedef struct pentry {
	char *key;
	rt_pid pid;
	char *meta; /* JSON object text including phx_ref */
} pentry;

typedef struct ptopic {
	struct ptopic *next;
	char *topic;
	pentry *v;
	size_t n, cap;
} ptopic;

#define NBUCKETS 1024

struct ch_presence {
	pthread_mutex_t lock;
	ptopic *buckets[NBUCKETS];
};

static unsigned
hash(const char *s)
{
	return (unsigned)(rt_hash_str(s) % NBUCKETS);
}

ch_presence *
presence_new(void)
{
	ch_presence *pr = calloc(1, sizeof(*pr));
	if (!pr)
		abort();
	pthread_mutex_init(&pr->lock, NULL);
	return pr;
}

static void
free_topic(ptopic *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->v[i].key);
		free(t->v[i].meta);
	}
	free(t->v);
	free(t->topic);
	free(t);
}

void
presence_free(ch_presence *pr)
{
	if (!pr)
		return;
	for (int i = 0; i < NBUCKETS; i++) {
		ptopic *t = pr->buckets[i];
		while (t) {
			ptopic *n = t->next;
			free_topic(t);
			t = n;
		}
	}
	pthread_mutex_destroy(&pr->lock);
	free(pr);
}

static ptopic **
find(ch_presence *pr, const char *topic)
{
	ptopic **pp = &pr->buckets[hash(topic)];
	while (*pp && strcmp((*pp)->topic, topic) != 0)
		pp = &(*pp)->next;
	return pp;
}

/* A phx_ref as Phoenix makes them: random bytes, base64. */
static void
make_ref(char out[16])
{
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char r[9];
	if (RAND_bytes(r, sizeof(r)) != 1)
		memset(r, 0x5a, sizeof(r));
	for (int g = 0; g < 3; g++) {
		unsigned v = (unsigned)r[3 * g] << 16 | (unsigned)r[3 * g + 1] << 8 | r[3 * g + 2];
		for (int k = 0; k < 4; k++)
			out[4 * g + k] = b64[(v >> (18 - 6 * k)) & 63];
	}
	out[12] = 0;
}

/* {"<key>":{"metas":[meta]}} for one entry, appended to b. */
static rt_buf *
append_member(rt_buf *b, const char *key, const char *const *metas, size_t nmetas)
{
	ch_json_append_string(&b, key, strlen(key));
	b = rt_buf_append_str(b, ":{\"metas\":[");
	for (size_t i = 0; i < nmetas; i++) {
		if (i)
			b = rt_buf_append(b, ",", 1);
		b = rt_buf_append_str(b, metas[i]);
	}
	return rt_buf_append_str(b, "]}");
}

static void
broadcast_diff(ch_endpoint *ep, const char *topic, const char *key, const char *meta, bool join)
{
	rt_buf *b = rt_buf_alloc(128);
	b = rt_buf_append_str(b, join ? "{\"joins\":{" : "{\"joins\":{},\"leaves\":{");
	b = append_member(b, key, &meta, 1);
	b = rt_buf_append_str(b, join ? "},\"leaves\":{}}" : "}}");
	b = rt_buf_append(b, "", 1);
	pubsub_local_broadcast(ep->pubsub, RT_NOPID, topic, "presence_diff", (const char *)b->data,
	                       b->len - 1);
	rt_buf_release(b);
}

int
ch_presence_track(ch_chan *ch, const char *key, const char *meta_json)
{
	cJSON *meta = cJSON_Parse(meta_json ? meta_json : "{}");
	if (!cJSON_IsObject(meta)) {
		cJSON_Delete(meta);
		return -1;
	}
	char ref[16];
	make_ref(ref);
	cJSON_DeleteItemFromObjectCaseSensitive(meta, "phx_ref");
	cJSON_AddStringToObject(meta, "phx_ref", ref);
	char *text = cJSON_PrintUnformatted(meta);
	cJSON_Delete(meta);
	if (!text)
		return -1;
	ch_endpoint *ep = ch_endpoint_of(ch);
	const char *topic = ch_topic(ch);
	ch_presence *pr = ep->presence;
	pthread_mutex_lock(&pr->lock);
	ptopic **pp = find(pr, topic);
	ptopic *t = *pp;
	if (!t) {
		t = calloc(1, sizeof(*t));
		if (!t || !(t->topic = strdup(topic)))
			abort();
		*pp = t;
	}
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 4;
		t->v = realloc(t->v, t->cap * sizeof(pentry));
		if (!t->v)
			abort();
	}
	t->v[t->n++] = (pentry){.key = strdup(key), .pid = rt_self(), .meta = text};
	pthread_mutex_unlock(&pr->lock);
	broadcast_diff(ep, topic, key, text, true);
	return 0;
}

char *
ch_presence_list(ch_chan *ch)
{
	ch_endpoint *ep = ch_endpoint_of(ch);
	ch_presence *pr = ep->presence;
	rt_buf *b = rt_buf_alloc(256);
	b = rt_buf_append(b, "{", 1);
	pthread_mutex_lock(&pr->lock);
	ptopic *t = *find(pr, ch_topic(ch));
	size_t n = t ? t->n : 0;
	bool *done = calloc(n ? n : 1, sizeof(bool));
	const char **metas = calloc(n ? n : 1, sizeof(char *));
	if (!done || !metas)
		abort();
	bool first = true;
	for (size_t i = 0; i < n; i++) {
		if (done[i])
			continue;
		size_t k = 0;
		for (size_t j = i; j < n; j++)
			if (!done[j] && strcmp(t->v[j].key, t->v[i].key) == 0) {
				done[j] = true;
				metas[k++] = t->v[j].meta;
			}
		if (!first)
			b = rt_buf_append(b, ",", 1);
		first = false;
		b = append_member(b, t->v[i].key, metas, k);
	}
	pthread_mutex_unlock(&pr->lock);
	free(done);
	free(metas);
	b = rt_buf_append(b, "}", 2);
	char *out = strdup((const char *)b->data);
	rt_buf_release(b);
	return out;
}

void
presence_untrack_pid(ch_endpoint *ep, const char *topic, rt_pid pid)
{
	ch_presence *pr = ep->presence;
	pentry gone[16];
	size_t ngone = 0;
	for (;;) {
		pthread_mutex_lock(&pr->lock);
		ptopic **pp = find(pr, topic);
		ptopic *t = *pp;
		ngone = 0;
		for (size_t i = 0; t && i < t->n && ngone < 16;) {
			if (t->v[i].pid == pid) {
				gone[ngone++] = t->v[i];
				t->v[i] = t->v[--t->n];
			} else {
				i++;
			}
		}
		if (t && t->n == 0) {
			*pp = t->next;
			free_topic(t);
		}
		pthread_mutex_unlock(&pr->lock);
		for (size_t i = 0; i < ngone; i++) {
			broadcast_diff(ep, topic, gone[i].key, gone[i].meta, false);
			free(gone[i].key);
			free(gone[i].meta);
		}
		if (ngone < 16)
			return;
	}
}

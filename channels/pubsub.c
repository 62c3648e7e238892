/*
 * Local PubSub (Phoenix.PubSub's local half) with Phoenix's fastlane.
 *
 * Topics live in NSHARDS shards chosen by hash, each a chained hash table
 * under a reader-writer lock: broadcasts of different topics, and broadcasts
 * of one topic from several processes, run in parallel; subscribe and
 * unsubscribe take the shard's write lock briefly.
 *
 * A subscriber is a process and, for channel processes, a fastlane: the pid
 * of the client's transport plus its serializer.  A broadcast is encoded once
 * per serializer and the same bytes (one refcounted rt_buf) go straight to
 * every transport, without waking the channel processes, unless the channel
 * intercepts that event (channel/server.ex's dispatch/3).  Subscribers whose
 * process is gone are found by the failed send and removed after the
 * broadcast, so a channel killed before it could unsubscribe does not linger.
 */
#include <stdlib.h>
#include <string.h>

#include "channels/internal.h"
#include "runtime/hash.h"
#include "runtime/pidmap.h" /* a generic container of the runtime's, for the pid index */

#define NSHARDS 64
#define MAX_DEAD 64

typedef struct sub {
	rt_pid pid;
	rt_pid fastlane;
	const char *const *intercepts;
	uint8_t vsn;
} sub;

typedef struct topic_ent {
	struct topic_ent *next;
	uint64_t hash;
	sub *subs;
	uint32_t n, cap;
	pidmap index; /* subscriber pid -> position in subs: O(1) unsubscribe */
	char topic[];
} topic_ent;

typedef struct shard {
	pthread_rwlock_t lock;
	topic_ent **buckets;
	size_t nbuckets, ntopics;
} shard;

struct ch_pubsub {
	shard shards[NSHARDS];
};

static uint64_t
hash_topic(const char *s)
{
	return rt_hash_str(s);
}

ch_pubsub *
pubsub_new(void)
{
	ch_pubsub *ps = calloc(1, sizeof(*ps));
	if (!ps)
		abort();
	for (int i = 0; i < NSHARDS; i++) {
		pthread_rwlock_init(&ps->shards[i].lock, NULL);
		ps->shards[i].nbuckets = 64;
		ps->shards[i].buckets = calloc(64, sizeof(topic_ent *));
		if (!ps->shards[i].buckets)
			abort();
	}
	return ps;
}

void
pubsub_free(ch_pubsub *ps)
{
	if (!ps)
		return;
	for (int i = 0; i < NSHARDS; i++) {
		shard *sh = &ps->shards[i];
		for (size_t b = 0; b < sh->nbuckets; b++) {
			topic_ent *t = sh->buckets[b];
			while (t) {
				topic_ent *n = t->next;
				free(t->subs);
				pidmap_free(&t->index);
				free(t);
				t = n;
			}
		}
		free(sh->buckets);
		pthread_rwlock_destroy(&sh->lock);
	}
	free(ps);
}

static shard *
shard_of(ch_pubsub *ps, uint64_t h)
{
	return &ps->shards[(h >> 58) % NSHARDS];
}

static topic_ent **
find(shard *sh, const char *topic, uint64_t h)
{
	topic_ent **pp = &sh->buckets[h % sh->nbuckets];
	while (*pp && ((*pp)->hash != h || strcmp((*pp)->topic, topic) != 0))
		pp = &(*pp)->next;
	return pp;
}

static void
grow(shard *sh)
{
	size_t nb = sh->nbuckets * 2;
	topic_ent **b = calloc(nb, sizeof(*b));
	if (!b)
		abort();
	for (size_t i = 0; i < sh->nbuckets; i++) {
		topic_ent *t = sh->buckets[i];
		while (t) {
			topic_ent *n = t->next;
			t->next = b[t->hash % nb];
			b[t->hash % nb] = t;
			t = n;
		}
	}
	free(sh->buckets);
	sh->buckets = b;
	sh->nbuckets = nb;
}

int
pubsub_subscribe(ch_pubsub *ps, const char *topic, rt_pid pid, rt_pid fastlane, int vsn,
                 const char *const *intercepts)
{
	uint64_t h = hash_topic(topic);
	shard *sh = shard_of(ps, h);
	pthread_rwlock_wrlock(&sh->lock);
	topic_ent **pp = find(sh, topic, h);
	topic_ent *t = *pp;
	if (!t) {
		size_t n = strlen(topic) + 1;
		t = calloc(1, sizeof(*t) + n);
		if (!t)
			abort();
		memcpy(t->topic, topic, n);
		t->hash = h;
		*pp = t;
		if (++sh->ntopics > sh->nbuckets * 2)
			grow(sh);
	}
	sub entry = {
	    .pid = pid, .fastlane = fastlane, .intercepts = intercepts, .vsn = (uint8_t)vsn};
	uint32_t i;
	if (pidmap_get(&t->index, pid, &i)) {
		t->subs[i] = entry; /* subscribing again updates the metadata */
	} else {
		if (t->n == t->cap) {
			t->cap = t->cap ? t->cap * 2 : 4;
			t->subs = realloc(t->subs, t->cap * sizeof(sub));
			if (!t->subs)
				abort();
		}
		pidmap_put(&t->index, pid, t->n);
		t->subs[t->n++] = entry;
	}
	pthread_rwlock_unlock(&sh->lock);
	return 0;
}

/* Removes pid's subscription to topic (write lock held). */
static int
remove_locked(shard *sh, const char *topic, uint64_t h, rt_pid pid)
{
	topic_ent **pp = find(sh, topic, h);
	topic_ent *t = *pp;
	uint32_t i;
	if (!t || !pidmap_get(&t->index, pid, &i))
		return -1;
	pidmap_del(&t->index, pid);
	if (i != --t->n) {
		t->subs[i] = t->subs[t->n];
		pidmap_put(&t->index, t->subs[i].pid, i);
	}
	if (t->n == 0) {
		*pp = t->next;
		free(t->subs);
		pidmap_free(&t->index);
		free(t);
		sh->ntopics--;
	}
	return 0;
}

int
pubsub_unsubscribe(ch_pubsub *ps, const char *topic, rt_pid pid)
{
	uint64_t h = hash_topic(topic);
	shard *sh = shard_of(ps, h);
	pthread_rwlock_wrlock(&sh->lock);
	int rc = remove_locked(sh, topic, h, pid);
	pthread_rwlock_unlock(&sh->lock);
	return rc;
}

static bool
intercepted(const char *const *list, const char *event)
{
	if (!list)
		return false;
	for (; *list; list++)
		if (strcmp(*list, event) == 0)
			return true;
	return false;
}

/* The message for plain and intercepting subscribers: topic, event and
 * payload, NUL-separated, in one shared buffer. */
static rt_buf *
pack_broadcast(const char *topic, const char *event, const char *payload, size_t payload_len)
{
	size_t tl = strlen(topic) + 1, el = strlen(event) + 1;
	rt_buf *b = rt_buf_alloc(tl + el + payload_len + 1);
	b = rt_buf_append(b, topic, tl);
	b = rt_buf_append(b, event, el);
	b = rt_buf_append(b, payload, payload_len);
	b = rt_buf_append(b, "", 1);
	return b;
}

int
ch_broadcast_read(const rt_msg *m, ch_broadcast_view *out)
{
	if (m->tag != CH_MSG_BROADCAST || !m->buf)
		return -1;
	const char *p = (const char *)m->buf->data;
	out->topic = p;
	out->event = p + strlen(p) + 1;
	out->payload = out->event + strlen(out->event) + 1;
	out->payload_len = m->buf->len - (size_t)(out->payload - p) - 1;
	return 0;
}

int
pubsub_local_broadcast(ch_pubsub *ps, rt_pid from, const char *topic, const char *event,
                       const char *payload, size_t payload_len)
{
	uint64_t h = hash_topic(topic);
	shard *sh = shard_of(ps, h);
	/* Each shared buffer takes a reference per remaining subscriber when it
	 * is made; the ones not handed out are dropped at the end. */
	rt_buf *enc[3] = {NULL, NULL, NULL};
	uint32_t enc_spare[3] = {0, 0, 0};
	bool enc_failed[3] = {false, false, false};
	rt_buf *packed = NULL;
	uint32_t packed_spare = 0;
	rt_pid dead[MAX_DEAD];
	int ndead = 0;

	pthread_rwlock_rdlock(&sh->lock);
	topic_ent *t = *find(sh, topic, h);
	for (uint32_t i = 0; t && i < t->n; i++) {
		const sub *s = &t->subs[i];
		if (s->pid == from)
			continue;
		int rc;
		if (s->fastlane && !intercepted(s->intercepts, event)) {
			int v = s->vsn == 1 ? 1 : 2;
			if (!enc[v] && !enc_failed[v]) {
				int kind = ch_encode_broadcast(&enc[v], v, topic, event, payload,
				                               payload_len);
				if (kind < 0) {
					rt_buf_release(enc[v]);
					enc[v] = NULL;
					enc_failed[v] = true;
					rt_log_warning(
					    "broadcast on %s: cannot encode %s for vsn %d", topic,
					    event, v);
				} else {
					enc[v]->flags = (uint32_t)kind;
					enc_spare[v] = t->n - i;
					rt_buf_retain_n(enc[v], enc_spare[v]);
				}
			}
			if (!enc[v])
				continue;
			enc_spare[v]--;
			rc = rt_send_buf(s->fastlane, CH_MSG_FRAME, NULL, 0, enc[v]);
		} else {
			if (!packed) {
				packed = pack_broadcast(topic, event, payload, payload_len);
				packed_spare = t->n - i;
				rt_buf_retain_n(packed, packed_spare);
			}
			packed_spare--;
			rc = rt_send_buf(s->pid, CH_MSG_BROADCAST, NULL, 0, packed);
		}
		if (rc < 0 && ndead < MAX_DEAD)
			dead[ndead++] = s->pid;
	}
	pthread_rwlock_unlock(&sh->lock);
	rt_buf_release_n(enc[1], enc_spare[1] + 1);
	rt_buf_release_n(enc[2], enc_spare[2] + 1);
	rt_buf_release_n(packed, packed_spare + 1);
	if (ndead) {
		pthread_rwlock_wrlock(&sh->lock);
		for (int i = 0; i < ndead; i++)
			remove_locked(sh, topic, h, dead[i]);
		pthread_rwlock_unlock(&sh->lock);
	}
	return 0;
}

size_t
pubsub_count(ch_pubsub *ps, const char *topic)
{
	uint64_t h = hash_topic(topic);
	shard *sh = shard_of(ps, h);
	pthread_rwlock_rdlock(&sh->lock);
	topic_ent *t = *find(sh, topic, h);
	size_t n = t ? t->n : 0;
	pthread_rwlock_unlock(&sh->lock);
	return n;
}

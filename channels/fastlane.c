/*
 * The channels' PubSub dispatcher (Phoenix.Channel.Server's fastlane) and
 * the broadcast message it carries (Phoenix.Socket.Broadcast).
 *
 * A broadcast message is {topic, event, payload}: NUL-separated in one
 * rt_buf, the payload JSON text, or bytes when the buffer's flags say
 * CH_BCAST_BINARY.  A channel subscribes to its topic with a fastlane value
 * (its transport, the transport's socket, the serializer, the intercepted
 * events) in the PubSub partition of its transport's scheduler.
 *
 * Dispatching runs in that partition's process, on the scheduler that owns
 * the transports: the frame is encoded once per serializer per broadcast
 * (shared by the partitions through the broadcast's cache) and, for a
 * transport of this scheduler with nothing queued in its mailbox and no
 * join pending on its socket, appended to its output queue directly.  Every
 * connection so touched is written once the partition has no broadcast
 * waiting, or after HOLD_MAX broadcasts: one write carries all the frames
 * that arrived meanwhile (what `rawfanout --batch` measures).  Any
 * other case gets what it got before: the frame as a CH_MSG_FRAME message
 * to the transport (which keeps order behind what is queued there), and
 * intercepted events as CH_MSG_BROADCAST to the channel (handle_out).
 */
#include <stdlib.h>
#include <string.h>

#include "channels/internal.h"
#include "runtime/utf8.h"

/* Broadcasts a partition may hold back before writing (as a server that
 * coalesces up to this many frames per connection into one write). */
#define HOLD_MAX 16

/* The fastlane's state in one PubSub partition (owned by the partition
 * process): the connections with frames queued by dispatch and not yet
 * written.  Their transports are checked (rt_local) again before writing,
 * since they may have ended between two turns of the partition. */
typedef struct fl_ctx {
	struct fl_dirty {
		ch_socket *sock;
		rt_pid transport;
	} * v;
	uint32_t n, cap;
	uint32_t held; /* broadcasts dispatched since the last write */
} fl_ctx;

static fl_ctx *
ctx_get(void **pctx)
{
	if (!*pctx) {
		*pctx = rt_xcalloc(1, sizeof(fl_ctx));
	}
	return *pctx;
}

static void
mark_dirty(fl_ctx *c, ch_socket *sock, rt_pid transport)
{
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 256;
		c->v = rt_xrealloc(c->v, c->cap * sizeof(*c->v));
	}
	c->v[c->n++] = (struct fl_dirty){sock, transport};
}

static bool
fl_flush(void **pctx, bool more)
{
	fl_ctx *c = *pctx;
	if (!c)
		return false;
	if (more && c->held < HOLD_MAX)
		return c->n > 0; /* more broadcasts queued: write once for all of them */
	for (uint32_t i = 0; i < c->n; i++)
		if (rt_local(c->v[i].transport))
			ch_socket_flush_local(c->v[i].sock);
	c->n = 0;
	c->held = 0;
	if (c->cap > 4096) { /* after a burst, do not keep the peak */
		free(c->v);
		c->v = NULL;
		c->cap = 0;
	}
	return false;
}

static void
fl_free_ctx(void *ctx)
{
	fl_ctx *c = ctx;
	free(c->v);
	free(c);
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

/* The frame for serializer vsn, encoded by the first partition that needs it. */
static rt_buf *
frame_for(ch_ps_bcast *b, const ch_broadcast_view *v, int vsn)
{
	rt_buf *f = ch_ps_cache_get(b, vsn);
	if (f)
		return f->len ? f : NULL; /* empty: could not be encoded */
	int kind =
	    v->binary
	        ? ch_encode_broadcast_bin(&f, vsn, v->topic, v->event, v->payload, v->payload_len)
	        : ch_encode_broadcast(&f, vsn, v->topic, v->event, v->payload, v->payload_len);
	if (kind < 0) {
		rt_log_warning("broadcast on %s: %s cannot be encoded for serializer V%d", v->topic,
		               v->event, vsn);
		rt_buf_release(f);
		f = rt_buf_alloc(0); /* remembered as "cannot" */
	} else {
		f->flags = (uint32_t)kind;
	}
	f = ch_ps_cache_put(b, vsn, f);
	return f->len ? f : NULL;
}

static size_t
fl_dispatch(ch_ps_bcast *b, const ch_ps_sub *subs, size_t n, rt_pid *dead, size_t dead_cap,
            void **pctx)
{
	fl_ctx *ctx = ctx_get(pctx);
	ctx->held++;
	rt_buf *msg = ch_ps_bcast_message(b);
	ch_broadcast_view v;
	if (ch_broadcast_view_of(msg, &v) < 0)
		return 0;
	rt_pid from = ch_ps_bcast_from(b);
	size_t ndead = 0;
	/* References are taken for all remaining subscribers when a buffer is
	 * first used (one atomic add), and the unused ones dropped at the end. */
	rt_buf *frame[CH_VSN_2 + 1] = {NULL}; /* indexed by serializer version */
	uint32_t spare[CH_VSN_2 + 1] = {0};
	uint32_t msg_spare = 0;
	bool msg_used = false;
	const char *const *last_list = NULL;
	bool last_hit = false; /* intercepted(NULL, ...) */
	for (size_t i = 0; i < n; i++) {
		const ch_ps_sub *s = &subs[i];
		if (s->pid == from)
			continue;
		ch_fastlane fl;
		memcpy(&fl, s->value, sizeof(fl));
		const char *const *list = ch_fastlane_intercepts(&fl);
		if (list != last_list) { /* subscribers of one module share their list */
			last_list = list;
			last_hit = intercepted(list, v.event);
		}
		int rc;
		if (!fl.transport || last_hit) {
			if (!msg_used) {
				msg_used = true;
				msg_spare = (uint32_t)(n - i);
				rt_buf_retain_n(msg, msg_spare);
			}
			msg_spare--;
			rc = rt_send_buf(s->pid, CH_MSG_BROADCAST, NULL, 0, msg);
		} else {
			int k = ch_fastlane_vsn(&fl) == CH_VSN_1 ? CH_VSN_1 : CH_VSN_2;
			if (!frame[k]) {
				frame[k] = frame_for(b, &v, k);
				if (!frame[k])
					continue;
				spare[k] = (uint32_t)(n - i);
				rt_buf_retain_n(frame[k], spare[k]);
			}
			spare[k]--;
			if (rt_local_idle(fl.transport)) {
				int q = ch_socket_push_local(fl.sock, frame[k]);
				if (q > 0) {
					if (q == CH_PUSH_FIRST)
						mark_dirty(ctx, fl.sock, fl.transport);
					continue;
				}
			}
			rc = rt_send_buf(fl.transport, CH_MSG_FRAME, NULL, 0, frame[k]);
		}
		if (rc < 0 && ndead < dead_cap)
			dead[ndead++] = s->pid;
	}
	if (msg_used)
		rt_buf_release_n(msg, msg_spare);
	for (int k = CH_VSN_1; k <= CH_VSN_2; k++)
		if (frame[k])
			rt_buf_release_n(frame[k], spare[k]);
	return ndead;
}

/* A broadcast from another node: the packed form (below) of topic, with an
 * event and topic in UTF-8 and a payload that is JSON text unless binary,
 * since the fastlane writes it into frames as it is. */
static bool
fl_check(const char *topic, uint32_t tag, const rt_buf *message)
{
	ch_broadcast_view v;
	if (tag != CH_MSG_BROADCAST || ch_broadcast_view_of(message, &v) < 0 ||
	    strcmp(v.topic, topic) != 0 || !v.event[0])
		return false;
	if (!rt_utf8_valid((const uint8_t *)v.topic, strlen(v.topic)) ||
	    !rt_utf8_valid((const uint8_t *)v.event, strlen(v.event)))
		return false;
	return v.binary || ch_json_valid(v.payload, v.payload_len);
}

const ch_ps_dispatcher ch_fastlane_dispatcher = {
    .name = "phx_fastlane",
    .dispatch = fl_dispatch,
    .flush = fl_flush,
    .free_ctx = fl_free_ctx,
    .check = fl_check,
};

/* ------------------------------------------------------------------ the broadcast message */

rt_buf *
ch_broadcast_pack(const char *topic, const char *event, const void *payload, size_t payload_len,
                  bool binary)
{
	size_t tl = strlen(topic) + 1, el = strlen(event) + 1;
	rt_buf *b = rt_buf_alloc(tl + el + payload_len + 1);
	b = rt_buf_append(b, topic, tl);
	b = rt_buf_append(b, event, el);
	if (payload_len)
		b = rt_buf_append(b, payload, payload_len);
	b = rt_buf_append(b, "", 1);
	b->flags = binary ? CH_BCAST_BINARY : 0;
	return b;
}

int
ch_broadcast_view_of(const rt_buf *b, ch_broadcast_view *out)
{
	if (!b || b->len < 3)
		return -1;
	const char *p = (const char *)b->data, *end = p + b->len;
	const char *e = memchr(p, 0, b->len);
	if (!e || e + 1 >= end)
		return -1;
	const char *ev = e + 1;
	const char *e2 = memchr(ev, 0, (size_t)(end - ev));
	if (!e2 || e2 + 1 > end - 1)
		return -1;
	out->topic = p;
	out->event = ev;
	out->payload = e2 + 1;
	out->payload_len = (size_t)(end - 1 - out->payload);
	out->binary = (b->flags & CH_BCAST_BINARY) != 0;
	return 0;
}

int
ch_broadcast_read(const rt_msg *m, ch_broadcast_view *out)
{
	if (m->tag != CH_MSG_BROADCAST)
		return -1;
	return ch_broadcast_view_of(m->buf, out);
}

int
chan_publish(ch_endpoint *ep, rt_pid from, const char *topic, const char *event,
             const void *payload, size_t payload_len, bool binary, bool local, ch_ps_bcast **track)
{
	if (track)
		*track = NULL;
	if (!topic || !event || (!payload && payload_len))
		return -1;
	rt_buf *m = ch_broadcast_pack(topic, event, payload, payload_len, binary);
	return ch_ps_publish(ep->pubsub, from, topic, CH_MSG_BROADCAST, m, &ch_fastlane_dispatcher,
	                     local, track);
}

int
pubsub_local_broadcast(ch_pubsub *ps, rt_pid from, const char *topic, const char *event,
                       const char *payload, size_t payload_len)
{
	rt_buf *m = ch_broadcast_pack(topic, event, payload, payload_len, false);
	return ch_ps_local_broadcast_from(ps, from, topic, CH_MSG_BROADCAST, m,
	                                  &ch_fastlane_dispatcher);
}

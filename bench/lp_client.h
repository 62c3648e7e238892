/*
 * bench/lp_client.h: the long-poll client of bench/loadgen (--transport
 * longpoll), as phoenix.js's LongPoll speaks it to Phoenix 1.7:
 *
 *   GET  PATH?vsn=..           opens a session: {"status":410,"token":T,...}
 *                              (a refused connect: {"status":403})
 *   GET  PATH?vsn=..&token=T   waits for messages: {"status":200,
 *                              "messages":["<frame JSON>",...],"token":T}
 *                              or {"status":204,...} after the poll window
 *   POST PATH?vsn=..&token=T   up to 100 frames, one a line
 *                              (application/x-ndjson): {"status":200} once
 *                              the session handled them, 410 when it is gone
 *
 * Every HTTP answer is 200; the real status is in the JSON body.  A session
 * keeps exactly one GET outstanding on its poll connection and at most one
 * POST in flight on its post connection (both keep-alive HTTP/1.1), and
 * batches the pushes made while a POST is in flight into the next one, as
 * phoenix.js does.
 *
 * Two layers: pure parsers (HTTP/1.1 response, the JSON body, the messages
 * array and its JSON-string unescaping), unit-tested in
 * test/bench/test_lp_client.c; and the session driver on a libev loop, which
 * calls back into the load generator.
 */
#ifndef bench_lp_client_h
#define bench_lp_client_h

#include <ev.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define LP_HEAD_MAX 8192         /* cap on an HTTP response head */
#define LP_TOKEN_MAX 1024        /* cap on a session token */
#define LP_BATCH_MAX 100         /* frames per POST (Phoenix reads at most 100) */
#define LP_PENDING_CAP (1 << 20) /* bytes of pushes waiting for a POST */
#define LP_MAX_MESSAGES 100000   /* messages in one poll answer */

/* ---- pure parsers ---- */

/* One parsed HTTP/1.1 response: filled by lp_http_response, owned by its caller. */
struct lp_resp {
	int status;      /* HTTP status code */
	int close;       /* "Connection: close" or HTTP/1.0 without keep-alive */
	size_t body_off; /* the body is buf[body_off, body_off + body_len) */
	size_t body_len;
};

/*
 * Parses one HTTP/1.1 response at the start of buf[0, len): returns its whole
 * length (head and body) when it is complete, 0 when more bytes are needed,
 * -1 when it is malformed, its head passes LP_HEAD_MAX or its body passes
 * body_max.  Bodies: Content-Length or chunked (decoded in place, inside the
 * response's own bytes, so buf is modified only once the response is
 * complete); neither: malformed (a long-poll answer always has a body).
 */
long lp_http_response(uint8_t *buf, size_t len, size_t body_max, struct lp_resp *r);

/*
 * Unescapes the JSON string whose opening quote is at p (p < e) into
 * out[0, cap): returns the length written and sets *end after the closing
 * quote; -1 when the string is unterminated, holds a raw control character,
 * a bad escape or a bad \u sequence (lone surrogates included), or does not
 * fit in cap.  \u escapes are written as UTF-8.
 */
long lp_json_unescape(const char *p, const char *e, char *out, size_t cap, const char **end);

/* A long-poll answer body: filled by lp_body_parse, owned by its caller; its
 * spans point into the parsed text. */
struct lp_body {
	int status;            /* -1: absent */
	const char *token;     /* the token string's opening quote, NULL: absent or null */
	const char *token_end; /* after its closing quote */
	const char *msgs;      /* the messages array's '[', NULL: absent */
	const char *msgs_end;  /* after its ']' */
};

/*
 * Parses {"status":N,"token":"...","messages":[...]} (keys in any order,
 * other keys skipped, nesting at most 32 deep): 0, or -1 when it is not such
 * an object (status not an integer in [0, 999], token not a string or null,
 * messages not an array).
 */
int lp_body_parse(const char *p, size_t n, struct lp_body *b);

/*
 * Walks the messages array [a, e) (a at '['): unescapes each element, which
 * must be a JSON string, into scratch[0, cap) and calls cb(arg, msg, len);
 * stops when cb returns non-zero.  Returns the number of messages handed to
 * cb, or -1 when the array is malformed, an element is not a string or does
 * not unescape into cap bytes, or it holds more than max_count elements
 * (messages before the fault were handed to cb already).
 */
long lp_messages_walk(const char *a, const char *e, char *scratch, size_t cap, long max_count,
                      int (*cb)(void *arg, const char *msg, size_t len), void *arg);

/* ---- the session driver ---- */

/* Why a session ended. */
enum lp_fail {
	LP_F_REFUSED,       /* TCP connect refused */
	LP_F_CONNECT_ERROR, /* any other socket or connect error */
	LP_F_NO_FD,         /* out of file descriptors */
	LP_F_CLOSED,        /* the server closed a connection with a request outstanding */
	LP_F_BAD_HTTP,      /* malformed HTTP response, or not 200 */
	LP_F_BAD_BODY,      /* body not a long-poll answer, or bad messages */
	LP_F_FORBIDDEN,     /* status 403: connect refused or vsn unsupported */
	LP_F_GONE,          /* status 410 on a poll of an open session or on a POST */
	LP_F_STATUS,        /* any other status in the body */
	LP_F_OVERFLOW,      /* a buffer cap was passed */
	LP_F_TIMEOUT,       /* a request went unanswered too long */
	LP_F_NREASONS
};

/* What a session reports to its owner (read-only, shared by a worker's
 * sessions; called on the loop's thread).  Every callback may call lp_close on
 * the session; the driver touches nothing of the session after that. */
struct lp_ops {
	void (*connected)(void *arg);           /* the poll connection's TCP is up */
	void (*opened)(void *arg, int64_t now); /* the session token arrived (410) */
	void (*message)(void *arg, const char *frame, size_t n, int64_t now);
	void (*failed)(void *arg, enum lp_fail why, int64_t now); /* already closed */
};

/* Where sessions go.  Read-only once sessions use it. */
struct lp_target {
	const struct sockaddr *sa;
	socklen_t salen;
	int family;
	const struct sockaddr_in *src; /* bind to this source address first; NULL: no */
	const char *host;              /* Host header */
	const char *path;              /* path and query, e.g. /socket/longpoll?vsn=2.0.0 */
};

/* One worker's long-poll state: owned by that worker's loop thread. */
struct lp_ctx {
	struct ev_loop *loop;
	const struct lp_ops *ops;
	int v1;             /* V1 serializer: one JSON frame per POST (not ndjson) */
	size_t max_msg;     /* largest frame accepted */
	size_t body_max;    /* largest response body accepted */
	double req_timeout; /* seconds a request may stay unanswered */
	char *scratch;      /* unescaped frame: max_msg bytes */
	uint64_t *bytes_in, *bytes_out, *polls, *posts; /* counters to add to (not NULL) */
	struct lp_sess *dirty; /* sessions with pushes and no POST in flight */
	ev_prepare flush;      /* sends their POSTs before the loop polls */
};

/* One keep-alive HTTP/1.1 connection of a session.  Owned by the loop. */
struct lp_http {
	ev_io io; /* first member: the watcher is the connection */
	struct lp_sess *s;
	int fd;       /* -1: not connected */
	uint32_t gen; /* counts closes: a request answered on an older one is stale */
	uint8_t connecting;
	uint8_t busy;    /* a request is outstanding */
	uint8_t reused;  /* it answered a request already (a close may be a race) */
	uint8_t retried; /* the outstanding request was sent again once */
	int64_t t_req;   /* when the outstanding request was queued */
	uint8_t *in;     /* response bytes not handled yet */
	uint32_t in_len, in_cap;
	uint8_t *out; /* the outstanding request: out[0, out_len), sent up to out_off */
	uint32_t out_len, out_off, out_cap;
};

/* One long-poll session.  Owned by its worker's loop. */
struct lp_sess {
	struct lp_ctx *ctx;
	const struct lp_target *t;
	void *arg; /* the owner's, passed to every callback */
	struct lp_http poll, post;
	uint8_t state;  /* LP_S_* in lp_client.c */
	uint8_t queued; /* on ctx->dirty */
	uint8_t in_cb;  /* a callback is running: lp_close defers freeing */
	char *token;    /* the session token, URL-encoded */
	uint16_t token_len;
	struct lp_sess *next_dirty;
	uint8_t *pend; /* pushes waiting for a POST: frames, one a line */
	uint32_t pend_len, pend_cap, pend_n;
};

/* Sets up ctx on loop (the caller fills ops, v1, max_msg, body_max,
 * req_timeout and the counter pointers first); 0, or -1 without memory. */
int lp_ctx_init(struct lp_ctx *ctx, struct ev_loop *loop);

/* Starts session s towards t: connects and sends the opening GET.  Failures
 * come back through ops->failed (possibly before this returns). */
void lp_start(struct lp_ctx *ctx, struct lp_sess *s, const struct lp_target *t, void *arg);

/* Queues one frame (JSON text, no newline) for the next POST; 0, or -1 when
 * the session is not open or the frame would pass LP_PENDING_CAP (the
 * session is then failed with LP_F_OVERFLOW). */
int lp_push(struct lp_sess *s, const char *frame, size_t n);

/* Bytes of pushes not yet answered by a POST (the caller's backpressure). */
size_t lp_backlog(const struct lp_sess *s);

/* True until the session failed or was closed. */
int lp_alive(const struct lp_sess *s);

/* Fails the session with LP_F_TIMEOUT when a request of it has waited longer
 * than ctx->req_timeout; call it now and then. */
void lp_check(struct lp_sess *s, int64_t now);

/* Closes the session's connections and frees its buffers (idempotent; no
 * callback).  The struct itself stays the caller's. */
void lp_close(struct lp_sess *s);

#endif

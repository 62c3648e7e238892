/*
 * tp_http: an HTTP/1.1 request parser and response-head writer.
 *
 * No I/O, no threads, no global state, no allocation.  The connection appends
 * what it reads to one contiguous buffer and calls tp_http_parse_next over the
 * whole unconsumed part every time new bytes arrive, with a small parse state
 * (tp_http_state) it keeps for the request at the start of that buffer.  The
 * parse resumes where the last call stopped, so its cost is linear in the
 * bytes received however they are split; and each byte's verdict depends only
 * on the bytes before it (the first byte that makes the request wrong decides
 * the answer), so a request split at any byte gets exactly the answer it gets
 * when it arrives at once.  tp_http_parse is the same with a fresh state (a
 * whole request, or tests).
 *
 * Byte ownership:
 *   - Every slice in a tp_http_request (method, path, header names and values,
 *     body, ...) points into the caller's buffer.  They stay valid while the
 *     caller keeps bytes [0, req.consumed) in place.
 *   - The buffer is written to only on TP_HTTP_COMPLETE for a chunked request:
 *     the chunk data is then decoded in place, so the body is contiguous at
 *     req.body (inside [0, req.consumed)); the chunk framing after it becomes
 *     garbage.  Never parse those same bytes again.
 *   - On TP_HTTP_COMPLETE the request spans bytes [0, req.consumed); anything
 *     after it (a pipelined request) is untouched and belongs to the next call.
 *   - Between calls with one state the buffer may move (the state holds
 *     offsets), and may grow at its end, but its first bytes must stay the
 *     same: the state describes them.
 *
 * Errors carry the HTTP status to answer (400, 413, 414, 431, 501, 505) and a
 * short static description for logs; after an error, answer and close.  The
 * answer is that of the first wrong byte: a byte past a limit is wrong
 * whatever it is (an over-long request line is a 414, an over-long header
 * section a 431, as Bandit answers), and a byte no request can have there is
 * a 400 at once, before the line ends (a TLS ClientHello on the plain port).
 * So a line with such a byte before its limit is a 400 even if it grows past
 * the limit later; Bandit, which judges a line only once it ends or is over
 * its limit, answers that one 414.
 */
#ifndef transports_http_h
#define transports_http_h

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "runtime/buf.h"

/* Default limits (see tp_http_config). */
#define TP_HTTP_DEFAULT_MAX_REQUEST_LINE 8192
#define TP_HTTP_DEFAULT_MAX_HEADER_BYTES 16384
#define TP_HTTP_DEFAULT_MAX_HEADERS 64
#define TP_HTTP_DEFAULT_MAX_BODY (1024 * 1024)
#define TP_HTTP_DEFAULT_MAX_CHUNK_OVERHEAD 65536

/* Room for headers in a tp_http_request; config.max_headers is capped to it. */
#define TP_HTTP_HEADERS_CAP 128

/*
 * Parser limits.  Any field left 0 takes its default.
 *   max_request_line   bytes of the request line without its line end, plus any
 *                      empty lines before it; over it -> 414.
 *   max_header_bytes   bytes of the header section, line ends and the final
 *                      empty line included; over it -> 431.
 *   max_headers        header lines (capped to TP_HTTP_HEADERS_CAP); over -> 431.
 *   max_body           body bytes: Content-Length, or decoded chunk data; over -> 413.
 *   max_chunk_overhead bytes of chunked framing (size lines, extensions, line
 *                      ends, trailer section); over it -> 413.
 */
typedef struct tp_http_config {
	size_t max_request_line;
	size_t max_header_bytes;
	size_t max_headers;
	size_t max_body;
	size_t max_chunk_overhead;
} tp_http_config;

/* A byte string that is not NUL-terminated; it points into the caller's buffer. */
typedef struct tp_http_str {
	const char *ptr;
	size_t len;
} tp_http_str;

/* One header line: name as sent, value trimmed of surrounding spaces and tabs. */
typedef struct tp_http_header {
	tp_http_str name;
	tp_http_str value;
} tp_http_header;

/* Request methods; the method is also kept verbatim in tp_http_request.method. */
typedef enum tp_http_method {
	TP_HTTP_OTHER = 0,
	TP_HTTP_GET,
	TP_HTTP_HEAD,
	TP_HTTP_POST,
	TP_HTTP_PUT,
	TP_HTTP_DELETE,
	TP_HTTP_OPTIONS,
	TP_HTTP_PATCH,
} tp_http_method;

/* Outcome of tp_http_parse. */
typedef enum tp_http_result {
	TP_HTTP_ERROR = -1,    /* req.status / req.error say what to answer */
	TP_HTTP_NEED_MORE = 0, /* incomplete: read more and call again with all bytes */
	TP_HTTP_COMPLETE = 1,  /* req is filled; req.consumed bytes belong to it */
} tp_http_result;

/*
 * A parsed request.  Fields are meaningful on TP_HTTP_COMPLETE, except status,
 * error (TP_HTTP_ERROR) and need (TP_HTTP_NEED_MORE).
 */
typedef struct tp_http_request {
	tp_http_str method;       /* verbatim, e.g. "GET" */
	tp_http_method method_id; /* TP_HTTP_OTHER for anything unlisted */
	tp_http_str target;       /* raw request-target */
	tp_http_str path;         /* target without query and fragment, still %-encoded */
	tp_http_str query;        /* raw query after '?' (without it); len 0 when none */
	int minor_version;        /* 0 or 1 (HTTP/1.x) */
	tp_http_header headers[TP_HTTP_HEADERS_CAP];
	size_t nheaders;        /* headers in request order */
	int64_t content_length; /* -1 when there is no Content-Length header */
	int chunked;            /* 1 when Transfer-Encoding: chunked */
	const char *body;       /* body_len bytes (NULL when body_len is 0) */
	size_t body_len;
	int keep_alive;    /* 1: the connection may carry another request */
	size_t consumed;   /* COMPLETE: bytes of the buffer this request spans */
	size_t need;       /* NEED_MORE: lower bound on the total bytes needed */
	int status;        /* ERROR: HTTP status to answer */
	const char *error; /* ERROR: short static description for logs */
	size_t examined;   /* any result: bytes this call looked at (parse work, for stats) */
} tp_http_request;

/*
 * Where the parse of the request at the start of the caller's buffer stands
 * between tp_http_parse_next calls: offsets into that buffer and what the
 * bytes before st.pos said (phase, sizes, counts).  All zero: nothing parsed
 * yet (a new request); the parser zeroes it again on TP_HTTP_COMPLETE and
 * TP_HTTP_ERROR.  Owned by the caller (a connection keeps it with its input
 * buffer); the fields are the parser's.
 */
typedef struct tp_http_state {
	size_t pos;        /* the next byte to look at */
	size_t line;       /* where the request line begins (after empty lines) */
	size_t head;       /* where the header section begins */
	size_t body;       /* where the body begins (once the head is complete) */
	size_t mark;       /* where the target, a Content-Length body or chunk data ends */
	uint64_t size;     /* chunked: the size of the current chunk */
	uint64_t total;    /* chunked: the data bytes of the chunks before it */
	size_t overhead;   /* chunked: framing bytes so far (<= max_chunk_overhead) */
	uint16_t nheaders; /* header lines so far */
	uint8_t phase;     /* what the byte at pos is part of */
	uint8_t sub;       /* where within that part */
} tp_http_state;

/* Fills cfg with the default limits. */
void tp_http_config_default(tp_http_config *cfg);

/*
 * Parses one request from buf[0, len).  cfg may be NULL for the defaults.
 * Returns TP_HTTP_NEED_MORE (nothing consumed), TP_HTTP_COMPLETE (req filled,
 * req->consumed bytes used) or TP_HTTP_ERROR (req->status, req->error).  Never
 * reads outside buf[0, len); writes into buf only when completing a chunked
 * request (see the ownership notes at the top of this file).  Empty lines
 * before the request line are skipped; bare LF line ends are accepted; a CR
 * not followed by LF is a 400.
 */
tp_http_result tp_http_parse(const tp_http_config *cfg, char *buf, size_t len,
                             tp_http_request *req);

/*
 * tp_http_parse for a request whose bytes arrive over several calls: st holds
 * what earlier calls over buf's first bytes found (see tp_http_state; zero it
 * for a new request), so each call looks only at the bytes that are new, and
 * at whole lines and the head once more when they complete.  buf[0, len) must
 * start with the same bytes as the previous call's (a shorter buffer starts
 * the parse over).  The results are those of tp_http_parse over buf[0, len).
 */
tp_http_result tp_http_parse_next(const tp_http_config *cfg, tp_http_state *st, char *buf,
                                  size_t len, tp_http_request *req);

/* The value of the first header named name (ASCII case-insensitive), or NULL. */
const tp_http_str *tp_http_header_get(const tp_http_request *req, const char *name);

/* How many headers are named name (ASCII case-insensitive). */
size_t tp_http_header_count(const tp_http_request *req, const char *name);

/*
 * 1 when the comma-separated list value[0, len) holds token (ASCII
 * case-insensitive, list elements trimmed of spaces and tabs), else 0.
 */
int tp_http_has_token(const char *value, size_t len, const char *token);

/* 1 when any header named name holds token in its comma-separated list, else 0. */
int tp_http_header_has_token(const tp_http_request *req, const char *name, const char *token);

/*
 * Iterates the parameters of a query string or form body q[0, qlen).  Start
 * with *pos = 0; each call returns 1 with the raw (still encoded) key and
 * value of the next parameter, or 0 at the end.  Empty parameters ("a&&b") are
 * skipped; a parameter without '=' has an empty value.  Decode with
 * tp_http_form_decode.
 */
int tp_http_query_next(const char *q, size_t qlen, size_t *pos, tp_http_str *key, tp_http_str *val);

/*
 * Decodes application/x-www-form-urlencoded text in[0, n): "%XX" escapes and
 * '+' as a space.  Writes the result and a NUL into out (so it needs cap >=
 * result + 1) and returns the result length (which may contain NUL bytes from
 * "%00"), or -1 for a malformed escape or when it does not fit.  in and out
 * may be the same buffer (decoding never grows).
 */
ssize_t tp_http_form_decode(const char *in, size_t n, char *out, size_t cap);

/*
 * Looks up parameter name (compared with the decoded key) in the query string
 * q[0, qlen) and decodes its value into out (NUL-terminated).  The first
 * occurrence wins.  Returns the decoded length, or -1 when the parameter is
 * absent, its value is malformed, or the value and its NUL do not fit in outcap.
 */
ssize_t tp_http_query_get(const char *q, size_t qlen, const char *name, char *out, size_t outcap);

/*
 * Percent-decodes a path in[0, n) into out (NUL-terminated).  '+' stays '+'.
 * Returns the decoded length, or -1 for a malformed escape, an escaped NUL
 * ("%00"), or when the result and its NUL do not fit in cap.  in and out may
 * be the same buffer.
 */
ssize_t tp_http_path_decode(const char *in, size_t n, char *out, size_t cap);

/* The standard reason phrase of status ("Not Found"), or "Unknown". */
const char *tp_http_reason(int status);

/* What the Connection header of a response says. */
typedef enum tp_http_conn {
	TP_HTTP_CONN_CLOSE = 0,  /* "Connection: close" */
	TP_HTTP_CONN_KEEP_ALIVE, /* "Connection: keep-alive" */
	TP_HTTP_CONN_NONE,       /* no Connection header (e.g. 101: extra supplies it) */
} tp_http_conn;

/*
 * A response head.  Written in this order, deterministically (no Date):
 *   HTTP/1.1 <status> <reason>\r\n
 *   Content-Type: <content_type>\r\n       when content_type is not NULL
 *   Content-Length: <content_length>\r\n   when content_length >= 0
 *   Connection: keep-alive|close\r\n       unless TP_HTTP_CONN_NONE
 *   <extra>                                verbatim: whole lines, each ending "\r\n"
 *   \r\n
 * content_type and extra come from the program, not from the peer.  A status
 * outside 100..999 is written as 500.
 */
typedef struct tp_http_head {
	int status;
	const char *content_type;
	int64_t content_length;
	tp_http_conn connection;
	const char *extra;
} tp_http_head;

/*
 * Writes the head h into out[0, cap) with a NUL after it.  Returns the head
 * length (without the NUL), or -1 when it does not fit or content_type holds
 * a CR or LF.
 */
ssize_t tp_http_head_write(char *out, size_t cap, const tp_http_head *h);

/*
 * Appends the head h to b (b NULL: a new buffer).  Returns the possibly moved
 * buffer.  A content_type holding CR or LF is left out.
 */
rt_buf *tp_http_head_append(rt_buf *b, const tp_http_head *h);

/*
 * Appends a whole small error response to b (b NULL: a new buffer): the head
 * (Content-Type: text/plain, Content-Length, Connection per conn, extra) and
 * the body "<status> <reason>\n", e.g. "404 Not Found\n".  Returns the
 * possibly moved buffer.
 */
rt_buf *tp_http_error_append(rt_buf *b, int status, tp_http_conn conn, const char *extra);

/*
 * Writes the same error response as tp_http_error_append into out[0, cap)
 * with a NUL after it.  Returns its length (without the NUL) or -1 when it
 * does not fit.
 */
ssize_t tp_http_error_write(char *out, size_t cap, int status, tp_http_conn conn,
                            const char *extra);

#endif /* transports_http_h */

/*
 * TLS for the endpoint's HTTPS listener, with OpenSSL (tls.h).
 *
 * Sockets.  OpenSSL reads and writes the connection's non-blocking socket
 * itself, through a BIO of ours: recv, and send with MSG_NOSIGNAL (a
 * library must not depend on SIGPIPE being ignored).  Blocking shows as
 * SSL_ERROR_WANT_READ/WANT_WRITE, which the core turns into its watcher's
 * events (tls_want_write).
 *
 * Reads return whole records only: SSL_read is called again only while the
 * caller's buffer has room for a full record (16 KiB), so OpenSSL never
 * keeps decrypted bytes that the level-triggered watcher would not announce.
 *
 * Writes.  The core hands the queue as iovecs (a 2..10-byte WebSocket header,
 * then its payload, ...).  Small pieces are gathered into one record in a
 * per-thread staging buffer (a record per piece would double the bytes on
 * the wire for small frames); a piece of a record or more is given to
 * SSL_write in place.  In partial-write mode SSL_write takes a record at a
 * time; when the socket is full it keeps that record and wants the same call
 * again: t->retry_len remembers its length, and the retry passes the same
 * bytes (the queue's head did not move) with that length.
 *
 * SSL_write wanting to read (renegotiation) cannot happen: renegotiation is
 * off and TLS 1.3 has none; it would be taken as blocked on writability.
 *
 * Memory per connection: OpenSSL's SSL object, and its record buffers only
 * while data is in flight (SSL_MODE_RELEASE_BUFFERS): an idle connection
 * holds no 16 KiB buffers.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "runtime/xalloc.h"
#include "transports/tls.h"
#include "transports/transports.h"

#define RECORD_MAX 16384     /* largest plaintext of a TLS record */
#define STAGE_SIZE 16384     /* gathered small pieces: one record */
#define DIRECT_MAX (1 << 30) /* bytes given to one SSL_write in place */

/* One TLS connection: owned by its connection's process (its scheduler's
 * thread). */
struct tls_conn {
	SSL *ssl;
	const char *why;    /* the handshake's failure (static), or NULL */
	uint32_t retry_len; /* length of the SSL_write to repeat, 0: none */
	bool ready;         /* handshake done */
	bool want_write;    /* the last handshake or read step needs writability */
	bool failed;        /* a fatal error: no close_notify */
	bool notified;      /* close_notify sent */
};

/* ------------------------------------------------------------------ the socket BIO */

/* Our BIO method: created once, read-only afterwards, shared by every
 * thread (OpenSSL's methods are process-wide tables).  Never freed: it lives
 * as long as the library may be used. */
static BIO_METHOD *sock_method;
static pthread_once_t sock_once = PTHREAD_ONCE_INIT;

static int
bio_fd(BIO *b)
{
	return (int)(intptr_t)BIO_get_data(b);
}

static bool
would_block(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

static int
sock_write(BIO *b, const char *buf, int len)
{
	BIO_clear_retry_flags(b);
	ssize_t n = send(bio_fd(b), buf, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0 && would_block())
		BIO_set_retry_write(b);
	return (int)n;
}

static int
sock_read(BIO *b, char *buf, int len)
{
	BIO_clear_retry_flags(b);
	ssize_t n = recv(bio_fd(b), buf, (size_t)len, 0);
	if (n < 0 && would_block())
		BIO_set_retry_read(b);
	return (int)n;
}

static int
sock_puts(BIO *b, const char *s)
{
	return sock_write(b, s, (int)strlen(s));
}

static long
sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* unbuffered; nothing else applies */
}

static int
sock_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void
make_sock_method(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "phx socket");
	if (!m || !BIO_meth_set_write(m, sock_write) || !BIO_meth_set_read(m, sock_read) ||
	    !BIO_meth_set_puts(m, sock_puts) || !BIO_meth_set_ctrl(m, sock_ctrl) ||
	    !BIO_meth_set_create(m, sock_create)) {
		BIO_meth_free(m);
		return;
	}
	sock_method = m;
}

/* ------------------------------------------------------------------ the staging buffer */

/* A scheduler thread's staging buffer for gathered writes (owned by that
 * thread, freed when it exits). */
static __thread uint8_t *stage;
static pthread_key_t stage_key;
static pthread_once_t stage_once = PTHREAD_ONCE_INIT;

static void
stage_destroy(void *p)
{
	free(p);
	stage = NULL;
}

static void
stage_make_key(void)
{
	if (pthread_key_create(&stage_key, stage_destroy) != 0)
		abort();
}

static uint8_t *
stage_get(void)
{
	if (!stage) {
		pthread_once(&stage_once, stage_make_key);
		stage = rt_xmalloc(STAGE_SIZE);
		pthread_setspecific(stage_key, stage);
	}
	return stage;
}

/* ------------------------------------------------------------------ context */

static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
            unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	static const unsigned char ours[] = "\x08http/1.1";
	unsigned char *sel = NULL;
	if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK; /* no ALPN answer: the client decides */
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

/* A key protected by a passphrase is refused instead of prompting. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return 0;
}

static void
ssl_reason(char *err, size_t cap, const char *what, const char *file)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	snprintf(err, cap, "%s %s%s%s", what, file, r ? ": " : "", r ? r : "");
	ERR_clear_error();
}

static bool
readable(const char *file, const char *what, char *err, size_t cap)
{
	if (!file || !*file) {
		snprintf(err, cap, "no %s file", what);
		return false;
	}
	FILE *f = fopen(file, "r");
	if (!f) {
		snprintf(err, cap, "cannot read the %s %s: %s", what, file, strerror(errno));
		return false;
	}
	fclose(f);
	return true;
}

tls_ctx *
tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t cap)
{
	if (!readable(cert_file, "certificate", err, cap) || !readable(key_file, "key", err, cap))
		return NULL;
	pthread_once(&sock_once, make_sock_method);
	ERR_clear_error();
	SSL_CTX *ctx = sock_method ? SSL_CTX_new(TLS_server_method()) : NULL;
	if (!ctx) {
		snprintf(err, cap, "cannot create a TLS context");
		ERR_clear_error();
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
	                             SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                          SSL_MODE_RELEASE_BUFFERS);
	/* Resumption by stateless tickets only: no server-side session cache
	 * (its memory, and its lock shared by every scheduler). */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		ssl_reason(err, cap, "no PEM certificate in", cert_file);
	} else if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		ssl_reason(err, cap, "no usable PEM private key in", key_file);
	} else if (SSL_CTX_check_private_key(ctx) != 1) {
		/* (OpenSSL dropped the certificate for the key: its reason misleads) */
		snprintf(err, cap, "the key %s does not match the certificate %s", key_file,
		         cert_file);
		ERR_clear_error();
	} else {
		return ctx;
	}
	SSL_CTX_free(ctx);
	return NULL;
}

void
tls_ctx_free(tls_ctx *ctx)
{
	SSL_CTX_free(ctx);
}

int
tp_tls_check(const char *cert_file, const char *key_file, char *err, size_t cap)
{
	tls_ctx *ctx = tls_ctx_new(cert_file, key_file, err, cap);
	if (!ctx)
		return -1;
	tls_ctx_free(ctx);
	return 0;
}

/* ------------------------------------------------------------------ connections */

tls_conn *
tls_conn_new(tls_ctx *ctx, int fd)
{
	tls_conn *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->ssl = SSL_new(ctx);
	BIO *b = t->ssl ? BIO_new(sock_method) : NULL;
	if (!b) {
		SSL_free(t->ssl);
		free(t);
		ERR_clear_error();
		return NULL;
	}
	BIO_set_data(b, (void *)(intptr_t)fd);
	SSL_set_bio(t->ssl, b, b); /* the SSL owns the BIO */
	SSL_set_accept_state(t->ssl);
	return t;
}

void
tls_conn_free(tls_conn *t)
{
	if (!t)
		return;
	SSL_free(t->ssl);
	free(t);
}

bool
tls_ready(const tls_conn *t)
{
	return t->ready;
}

bool
tls_want_write(const tls_conn *t)
{
	return t->want_write;
}

const char *
tls_error(const tls_conn *t)
{
	return t->why ? t->why : "failed";
}

int
tls_handshake(tls_conn *t)
{
	ERR_clear_error();
	int r = SSL_do_handshake(t->ssl);
	t->want_write = false;
	if (r == 1) {
		t->ready = true;
		return TLS_DONE;
	}
	int e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		return TLS_AGAIN;
	if (e == SSL_ERROR_WANT_WRITE) {
		t->want_write = true;
		return TLS_AGAIN;
	}
	t->failed = true;
	unsigned long code = ERR_peek_error();
	t->why = code ? ERR_reason_error_string(code) : NULL;
	if (!t->why)
		t->why = e == SSL_ERROR_SYSCALL ? "connection closed" : "failed";
	ERR_clear_error();
	return TLS_FAILED;
}

ssize_t
tls_read(tls_conn *t, void *buf, size_t cap)
{
	uint8_t *p = buf;
	size_t got = 0;
	t->want_write = false;
	while (got == 0 || cap - got >= RECORD_MAX) {
		size_t room = cap - got;
		ERR_clear_error();
		int r = SSL_read(t->ssl, p + got, room > INT_MAX ? INT_MAX : (int)room);
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (got) /* whatever stopped this read happens again on the next */
			break;
		int e = SSL_get_error(t->ssl, r);
		switch (e) {
		case SSL_ERROR_WANT_READ:
			errno = EAGAIN;
			return -1;
		case SSL_ERROR_WANT_WRITE:
			t->want_write = true;
			errno = EAGAIN;
			return -1;
		case SSL_ERROR_ZERO_RETURN:
			return 0;
		case SSL_ERROR_SYSCALL:
			t->failed = true;
			if (errno == 0 || would_block())
				errno = ECONNRESET;
			ERR_clear_error();
			return -1;
		default:
			t->failed = true;
			errno = EPROTO;
			ERR_clear_error();
			return -1;
		}
	}
	return (ssize_t)got;
}

ssize_t
tls_writev(tls_conn *t, const struct iovec *iov, int n)
{
	size_t done = 0, off = 0; /* written by this call; offset in iov[i] */
	int i = 0;
	for (;;) {
		while (i < n && off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			i++;
		}
		if (i == n)
			break;
		const uint8_t *p;
		size_t len, rem = iov[i].iov_len - off;
		if (rem >= STAGE_SIZE) { /* in place */
			p = (const uint8_t *)iov[i].iov_base + off;
			len = rem < DIRECT_MAX ? rem : DIRECT_MAX;
			if (t->retry_len && t->retry_len < len)
				len = t->retry_len;
		} else { /* gathered: the pieces from (i, off) into one record */
			uint8_t *s = stage_get();
			size_t want = t->retry_len ? t->retry_len : STAGE_SIZE, o = off;
			len = 0;
			for (int k = i; k < n && len < want; k++, o = 0) {
				size_t m = iov[k].iov_len - o;
				if (m > want - len)
					m = want - len;
				memcpy(s + len, (const uint8_t *)iov[k].iov_base + o, m);
				len += m;
			}
			p = s;
		}
		ERR_clear_error();
		int w = SSL_write(t->ssl, p, (int)len);
		if (w > 0) {
			t->retry_len = 0;
			done += (size_t)w;
			off += (size_t)w;
			continue;
		}
		int e = SSL_get_error(t->ssl, w);
		if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
			t->retry_len = (uint32_t)len;
			if (done)
				return (ssize_t)done;
			errno = EAGAIN;
			return -1;
		}
		t->failed = true;
		ERR_clear_error();
		errno = EPIPE;
		return -1;
	}
	return (ssize_t)done;
}

void
tls_close_notify(tls_conn *t)
{
	if (!t || !t->ready || t->failed || t->notified)
		return;
	t->notified = true;
	ERR_clear_error();
	(void)SSL_shutdown(t->ssl);
	ERR_clear_error();
}

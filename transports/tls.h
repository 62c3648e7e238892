/*
 * tls.h: TLS on the endpoint's connections with OpenSSL (tls.c; not for
 * apps).  The HTTPS listener's connections carry a tls_conn, and the I/O core
 * (conn.c) calls this small interface instead of recv and sendmsg:
 * handshake, read, write of the queue's iovecs, close_notify, free.  Plain
 * connections never reach this file.
 *
 * The endpoint owns one context (SSL_CTX: certificate and key, TLS 1.2+, ALPN
 * http/1.1), shared read-only by every scheduler thread (OpenSSL locks the
 * little it changes, its session cache).  A tls_conn belongs to its
 * connection's process, so to that scheduler's thread: everything here runs
 * there (the fastlane's foreign flush too: same thread), with no lock.
 */
#ifndef transports_tls_h
#define transports_tls_h

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct ssl_ctx_st tls_ctx; /* OpenSSL's SSL_CTX */
typedef struct tls_conn tls_conn;

/* The endpoint's context from PEM files cert_file (the certificate, then its
 * chain) and key_file (its private key): TLS 1.2 and 1.3, ALPN http/1.1.
 * NULL when a file is missing or unreadable, or the key does not match the
 * certificate; then err[0, cap) says why. */
tls_ctx *tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t cap);

/* Releases the context (NULL: nothing); no connection may use it any more. */
void tls_ctx_free(tls_ctx *ctx);

/* A server-side TLS connection over the non-blocking socket fd (which the
 * caller keeps owning), or NULL when out of memory. */
tls_conn *tls_conn_new(tls_ctx *ctx, int fd);

/* Frees t (NULL: nothing); the fd is not closed. */
void tls_conn_free(tls_conn *t);

/* Advances the handshake: TLS_DONE, TLS_AGAIN (blocked: wait for
 * readability, or writability when tls_want_write), TLS_FAILED (the peer is
 * not speaking TLS, or failed it; tls_error says why). */
enum { TLS_FAILED = -1, TLS_AGAIN = 0, TLS_DONE = 1 };
int tls_handshake(tls_conn *t);

/* The handshake is complete. */
bool tls_ready(const tls_conn *t);

/* Reads decrypted bytes into buf[0, cap), as recv does: > 0 bytes (whole TLS
 * records only: nothing stays buffered inside OpenSSL while the socket is
 * quiet), 0 end of input (close_notify or the TCP end), -1 with errno
 * (EAGAIN: blocked; tls_want_write says on what). */
ssize_t tls_read(tls_conn *t, void *buf, size_t cap);

/* Writes iov[0, n) as sendmsg does: the bytes written (fewer: the socket is
 * full), or -1 with errno (EAGAIN: nothing written now).  After a short
 * write or EAGAIN, the next call must start with the same unwritten bytes
 * (the core's queue does: it only drops what was written). */
ssize_t tls_writev(tls_conn *t, const struct iovec *iov, int n);

/* The last handshake or read was blocked on writability. */
bool tls_want_write(const tls_conn *t);

/* Sends close_notify once, best effort (never blocks; after the handshake
 * and no fatal error only). */
void tls_close_notify(tls_conn *t);

/* Why the last handshake failed (a static string). */
const char *tls_error(const tls_conn *t);

#endif /* transports_tls_h */

/*
 * Static files, cached in memory at start (files do not change at run time):
 * every regular file under static_dir (hidden names skipped) and the alias
 * pairs {url, file}.  Each file keeps its bytes and both possible 200 heads
 * as shared rt_bufs, so serving one costs no copy and no allocation beyond
 * the queue entries.  Lookups are by exact decoded URL path in a sorted
 * array: a path that is not a cached file (".." included) cannot reach the
 * file system.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/xalloc.h"
#include "transports/endpoint.h"

#define STATIC_MAX_FILE (8u * 1024 * 1024)    /* bytes per file */
#define STATIC_MAX_TOTAL (256u * 1024 * 1024) /* bytes in the cache */
#define STATIC_MAX_FILES 10000
#define STATIC_MAX_DEPTH 16

static const struct {
	const char *ext, *ctype;
} ctypes[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"js", "text/javascript"},
    {"mjs", "text/javascript"},
    {"css", "text/css"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"png", "image/png"},
    {"svg", "image/svg+xml"},
    {"ico", "image/x-icon"},
    {"txt", "text/plain; charset=utf-8"},
};

const char *
tp_static_ctype(const char *name)
{
	const char *slash = strrchr(name, '/');
	const char *dot = strrchr(slash ? slash : name, '.');
	if (dot)
		for (size_t i = 0; i < sizeof(ctypes) / sizeof(ctypes[0]); i++)
			if (strcasecmp(dot + 1, ctypes[i].ext) == 0)
				return ctypes[i].ctype;
	return "application/octet-stream";
}

/* Reads a whole regular file of at most STATIC_MAX_FILE bytes; NULL (logged) otherwise. */
static rt_buf *
read_file(const char *file)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rt_log_warning("static file %s: %s", file, strerror(errno));
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rt_log_warning("static file %s: not a regular file", file);
		close(fd);
		return NULL;
	}
	if ((uint64_t)st.st_size > STATIC_MAX_FILE) {
		rt_log_warning("static file %s: %lld bytes, over the %u-byte limit: not served",
		               file, (long long)st.st_size, STATIC_MAX_FILE);
		close(fd);
		return NULL;
	}
	size_t size = (size_t)st.st_size;
	rt_buf *b = rt_buf_alloc(size ? size : 1);
	while (b->len < size) {
		ssize_t n = read(fd, b->data + b->len, size - b->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rt_log_warning("static file %s: read failed", file);
			rt_buf_release(b);
			close(fd);
			return NULL;
		}
		b->len += (size_t)n;
	}
	close(fd);
	return b;
}

static void
file_free(tp_file *f)
{
	free(f->url);
	rt_buf_release(f->body);
	rt_buf_release(f->head_keep);
	rt_buf_release(f->head_close);
}

/* Adds url -> file (replacing an earlier entry for the same url). */
static void
add_file(tp_static *s, size_t *cap, const char *url, const char *file)
{
	if (s->n >= STATIC_MAX_FILES) {
		rt_log_warning("static files: more than %d, %s not served", STATIC_MAX_FILES, file);
		return;
	}
	if (url[0] != '/' || strlen(url) > 4096) {
		rt_log_warning("static alias %s: the URL path must start with /", url);
		return;
	}
	rt_buf *body = read_file(file);
	if (!body)
		return;
	if (s->bytes + body->len > STATIC_MAX_TOTAL) {
		rt_log_warning("static files: over %u bytes in all, %s not served",
		               STATIC_MAX_TOTAL, file);
		rt_buf_release(body);
		return;
	}
	tp_file f = {.ctype = tp_static_ctype(file), .body = body};
	f.url = rt_xstrdup(url);
	tp_http_head h = {.status = 200,
	                  .content_type = f.ctype,
	                  .content_length = (int64_t)body->len,
	                  .connection = TP_HTTP_CONN_KEEP_ALIVE};
	f.head_keep = tp_http_head_append(NULL, &h);
	h.connection = TP_HTTP_CONN_CLOSE;
	f.head_close = tp_http_head_append(NULL, &h);
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->files[i].url, url) == 0) {
			s->bytes -= s->files[i].body->len;
			file_free(&s->files[i]);
			s->files[i] = f;
			s->bytes += body->len;
			return;
		}
	if (s->n == *cap) {
		*cap = *cap ? *cap * 2 : 16;
		s->files = rt_xrealloc(s->files, *cap * sizeof(tp_file));
	}
	s->files[s->n++] = f;
	s->bytes += body->len;
}

/* Walks dir/rel (rel "" or "sub/dir/") adding every regular file. */
static void
walk(tp_static *s, size_t *cap, const char *dir, const char *rel, int depth)
{
	char path[4096];
	if (snprintf(path, sizeof(path), "%s/%s", dir, rel) >= (int)sizeof(path))
		return;
	DIR *d = opendir(path);
	if (!d) {
		rt_log_warning("static directory %s: %s", path, strerror(errno));
		return;
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.') /* ".", "..", hidden files */
			continue;
		char file[4096], url[4096];
		if (snprintf(file, sizeof(file), "%s/%s%s", dir, rel, e->d_name) >=
		        (int)sizeof(file) ||
		    snprintf(url, sizeof(url), "/%s%s", rel, e->d_name) >= (int)sizeof(url))
			continue;
		struct stat st;
		if (stat(file, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (depth >= STATIC_MAX_DEPTH) {
				rt_log_warning("static directory %s: too deep, skipped", file);
				continue;
			}
			char sub[4096];
			if (snprintf(sub, sizeof(sub), "%s%s/", rel, e->d_name) < (int)sizeof(sub))
				walk(s, cap, dir, sub, depth + 1);
		} else if (S_ISREG(st.st_mode)) {
			add_file(s, cap, url, file);
		}
	}
	closedir(d);
}

static int
file_cmp(const void *a, const void *b)
{
	return strcmp(((const tp_file *)a)->url, ((const tp_file *)b)->url);
}

tp_static *
tp_static_load(const char *dir, const char *const *aliases)
{
	tp_static *s = rt_xcalloc(1, sizeof(*s));
	size_t cap = 0;
	if (dir)
		walk(s, &cap, dir, "", 0);
	for (size_t i = 0; aliases && aliases[i] && aliases[i + 1]; i += 2)
		add_file(s, &cap, aliases[i], aliases[i + 1]);
	if (s->n)
		qsort(s->files, s->n, sizeof(tp_file), file_cmp);
	rt_log_debug("static files: %zu cached, %zu bytes", s->n, s->bytes);
	return s;
}

void
tp_static_free(tp_static *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		file_free(&s->files[i]);
	free(s->files);
	free(s);
}

/* Compares the NUL-terminated a with b[0, n). */
static int
cmp_n(const char *a, const char *b, size_t n)
{
	size_t la = strlen(a);
	int c = memcmp(a, b, la < n ? la : n);
	if (c)
		return c;
	return la < n ? -1 : la > n;
}

static const tp_file *
find_exact(const tp_static *s, const char *p, size_t n)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = cmp_n(s->files[mid].url, p, n);
		if (c == 0)
			return &s->files[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const tp_file *
tp_static_find(const tp_static *s, const char *path, size_t len)
{
	if (!s || !s->n || len == 0 || path[0] != '/' || memchr(path, '\0', len))
		return NULL;
	/* No "." or ".." segment, no backslash: such a path is never a cached
	 * file, but refuse it explicitly. */
	if (memchr(path, '\\', len))
		return NULL;
	for (size_t i = 1, start = 1; i <= len; i++) {
		if (i < len && path[i] != '/')
			continue;
		size_t seg = i - start;
		if ((seg == 1 && path[start] == '.') ||
		    (seg == 2 && path[start] == '.' && path[start + 1] == '.'))
			return NULL;
		start = i + 1;
	}
	if (path[len - 1] == '/') {
		char buf[4200];
		if (len + sizeof("index.html") > sizeof(buf))
			return NULL;
		memcpy(buf, path, len);
		memcpy(buf + len, "index.html", sizeof("index.html") - 1);
		return find_exact(s, buf, len + sizeof("index.html") - 1);
	}
	return find_exact(s, path, len);
}

/*
 * Tests for channels/serializer: V1/V2 decoding (strictness included), exact
 * bytes of every encoder against the frames real Phoenix sends (see
 * ../shared/conformance/README.md, "Wire facts"), refs echoed verbatim, V2
 * binary frames, and garbage in any shape giving a clean -1.  Run under ASan;
 * TEST_NOFORK=1 makes LeakSanitizer see every case.
 */
#include "test/harness.h"

#include "channels/serializer.h"

/* A literal as (text, length) for encoders, or as (bytes, length) for the decoder. */
#define S(lit) (lit), sizeof(lit) - 1
#define U(lit) (const uint8_t *)(lit), sizeof(lit) - 1

/* Decodes a string literal; the caller frees m. */
static int
dec(int vsn, int bin, const char *s, size_t n, ch_msg *m)
{
	const char *err = NULL;
	int r = ch_msg_decode(vsn, bin, (const uint8_t *)s, n, m, &err);
	if (r == 0)
		CHECK(err == NULL);
	else
		CHECK(err != NULL && m->mem_ == NULL && m->payload == NULL && m->topic == NULL);
	return r;
}

#define DEC2(lit, m) dec(CH_VSN_2, 0, lit, sizeof(lit) - 1, m)
#define DEC1(lit, m) dec(CH_VSN_1, 0, lit, sizeof(lit) - 1, m)

/* Checks that b holds exactly the string literal / bytes, then empties it. */
#define CHECK_BUF(b, lit)                                                                          \
	do {                                                                                       \
		CHECK_MSG((b)->len == sizeof(lit) - 1 && memcmp((b)->data, lit, (b)->len) == 0,    \
		          "frame %.*s\n     wanted %s", (int)(b)->len, (const char *)(b)->data,    \
		          lit);                                                                    \
		(b)->len = 0;                                                                      \
	} while (0)

/* ---- V2 text decoding ---------------------------------------------------------- */

static void
test_v2_decode_basic(void)
{
	ch_msg m;
	CHECK_EQ(DEC2("[\"1\",\"2\",\"room:lobby\",\"phx_join\",{\"a\":1}]", &m), 0);
	CHECK_STR(m.join_ref, "\"1\"");
	CHECK_STR(m.ref, "\"2\"");
	CHECK_STR(m.topic, "room:lobby");
	CHECK_STR(m.event, "phx_join");
	CHECK_STR(m.payload_json, "{\"a\":1}");
	CHECK_EQ(m.payload_json_len, 7);
	CHECK(cJSON_IsObject(m.payload));
	CHECK_EQ(cJSON_GetObjectItem(m.payload, "a")->valueint, 1);
	CHECK(m.bin == NULL && m.bin_len == 0);
	ch_msg_free(&m);
	CHECK(m.topic == NULL && m.mem_ == NULL);
	ch_msg_free(&m); /* twice is fine */
	ch_msg_free(NULL);

	/* Whitespace anywhere JSON allows it; the payload text is kept as sent. */
	CHECK_EQ(DEC2(" \r\n\t[ null ,12 , \"t\"\t,\"e\" , { \"x\" : [ 1 , 2.50 ] } ] \n", &m), 0);
	CHECK_STR(m.join_ref, "null");
	CHECK_STR(m.ref, "12");
	CHECK_STR(m.payload_json, "{ \"x\" : [ 1 , 2.50 ] }");
	ch_msg_free(&m);
}

static void
test_v2_decode_refs_any_json(void)
{
	ch_msg m;
	CHECK_EQ(DEC2("[1.5e3,true,\"t\",\"e\",{}]", &m), 0);
	CHECK_STR(m.join_ref, "1.5e3");
	CHECK_STR(m.ref, "true");
	ch_msg_free(&m);
	CHECK_EQ(DEC2("[{\"a\":[1]},[\"x\"],\"t\",\"e\",{}]", &m), 0);
	CHECK_STR(m.join_ref, "{\"a\":[1]}");
	CHECK_STR(m.ref, "[\"x\"]");
	ch_msg_free(&m);
	CHECK_EQ(DEC2("[\"a\\u0062\",\"\\\"\",\"t\",\"e\",{}]", &m), 0);
	CHECK_STR(m.join_ref, "\"a\\u0062\""); /* raw, not re-escaped */
	CHECK_STR(m.ref, "\"\\\"\"");
	ch_msg_free(&m);
}

static void
test_v2_decode_payload_any_json(void)
{
	/* Phoenix's V2 decode does not look at the payload: any JSON value. */
	const char *frames[] = {
	    "[null,\"1\",\"t\",\"e\",[1,2]]", "[null,\"1\",\"t\",\"e\",\"s\"]",
	    "[null,\"1\",\"t\",\"e\",null]",  "[null,\"1\",\"t\",\"e\",-0.5E+2]",
	    "[null,\"1\",\"t\",\"e\",false]",
	};
	for (size_t i = 0; i < sizeof(frames) / sizeof(frames[0]); i++) {
		ch_msg m;
		CHECK_MSG(dec(CH_VSN_2, 0, frames[i], strlen(frames[i]), &m) == 0, "refused %s",
		          frames[i]);
		CHECK(m.payload != NULL);
		ch_msg_free(&m);
	}
}

static void
test_v2_decode_extra_elements(void)
{
	/* [join_ref, ref, topic, event, payload | _] */
	ch_msg m;
	CHECK_EQ(DEC2("[\"1\",\"2\",\"t\",\"e\",{},\"extra\",[1,{\"a\":null}],7]", &m), 0);
	CHECK_STR(m.payload_json, "{}");
	ch_msg_free(&m);
	/* ... but the extra elements must still be valid JSON. */
	CHECK_EQ(DEC2("[\"1\",\"2\",\"t\",\"e\",{},nope]", &m), -1);
	CHECK_EQ(DEC2("[\"1\",\"2\",\"t\",\"e\",{},]", &m), -1);
}

static void
test_v2_decode_errors(void)
{
	const char *bad[] = {
	    "",
	    " ",
	    "hello",
	    "[",
	    "[\"1\",",
	    "[]",
	    "[ ]",
	    "[\"1\",\"2\",\"t\",\"e\"]", /* 4 elements */
	    "[\"1\",\"2\",\"t\"]",
	    "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":null}", /* V1 shape */
	    "\"str\"",
	    "5",
	    "null",
	    "[\"1\",\"2\",5,\"e\",{}]", /* non-string topic */
	    "[\"1\",\"2\",null,\"e\",{}]",
	    "[\"1\",\"2\",\"t\",[\"e\"],{}]", /* non-string event */
	    "[\"1\",\"2\",\"t\",\"e\",{}] x", /* trailing data */
	    "[\"1\",\"2\",\"t\",\"e\",{}][]",
	    "[\"1\",\"2\",\"t\",\"e\",{},]", /* trailing comma */
	    "[,\"1\",\"2\",\"t\",\"e\",{}]",
	    "[\"1\" \"2\",\"t\",\"e\",{}]",
	    "[\"1\",\"2\",\"t\",\"e\",{\"a\"}]",
	    "[\"1\",\"2\",\"t\",\"e\",{\"a\":}]",
	    "[\"1\",\"2\",\"t\",\"e\",{a:1}]",
	    "[\"1\",\"2\",\"t\",\"e\",{\"a\":1,}]",
	    "[\"1\",\"2\",\"t\",\"e\",{\"a\":1]",
	    "[\"1\",\"2\",\"t\",\"e\",[1}]",
	    "[01,\"2\",\"t\",\"e\",{}]", /* numbers, strictly */
	    "[1.,\"2\",\"t\",\"e\",{}]",
	    "[.5,\"2\",\"t\",\"e\",{}]",
	    "[+1,\"2\",\"t\",\"e\",{}]",
	    "[-,\"2\",\"t\",\"e\",{}]",
	    "[1e,\"2\",\"t\",\"e\",{}]",
	    "[1e+,\"2\",\"t\",\"e\",{}]",
	    "[NaN,\"2\",\"t\",\"e\",{}]",
	    "[tru,\"2\",\"t\",\"e\",{}]",
	    "[nul,\"2\",\"t\",\"e\",{}]",
	    "['1',\"2\",\"t\",\"e\",{}]",
	    "[\"1\",\"2\",\"t\",\"e\",{}", /* unterminated */
	    "[\"1\",\"2\",\"t\",\"e\",{\"a\":\"b}]",
	    "[\"1\",\"2\",\"t\\q\",\"e\",{}]", /* bad escape */
	    "[\"1\",\"2\",\"t\\u12\",\"e\",{}]",
	    "[\"1\",\"2\",\"t\\u12G4\",\"e\",{}]",
	    "[\"1\",\"2\",\"t\\ud800\",\"e\",{}]", /* lone surrogates */
	    "[\"1\",\"2\",\"t\\udc00\",\"e\",{}]",
	    "[\"1\",\"2\",\"t\\ud800\\u0041\",\"e\",{}]",
	    "[\"1\",\"2\",\"t\\ud800\\ud800\",\"e\",{}]",
	    "[\"1\",\"2\",\"t\\u0000\",\"e\",{}]", /* NUL in topic */
	    "[\"1\",\"2\",\"t\",\"\\u0000e\",{}]",
	    "[\"1\",\"2\",\"t\x01\",\"e\",{}]", /* raw control character */
	    "[\"1\",\"2\",\"t\n\",\"e\",{}]",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ch_msg m;
		CHECK_MSG(dec(CH_VSN_2, 0, bad[i], strlen(bad[i]), &m) == -1, "accepted #%zu: %s",
		          i, bad[i]);
	}
	ch_msg m;
	const char *err = NULL;
	CHECK_EQ(ch_msg_decode(3, 0, U("[\"1\",\"2\",\"t\",\"e\",{}]"), &m, &err), -1);
	CHECK(err != NULL);
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 0, NULL, 0, &m, NULL), -1);
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 0, NULL, 5, &m, NULL), -1);
}

static void
test_v2_decode_utf8(void)
{
	ch_msg m;
	/* Escapes and raw UTF-8 decode to UTF-8. */
	CHECK_EQ(DEC2("[null,\"1\",\"r\\u00e9\\n\\/\\\"\\\\\\b\\f\\r\\t\",\"\xc3\xa9\xe2\x82\xac"
	              "\xf0\x9f\x98\x80\",{}]",
	              &m),
	         0);
	CHECK_STR(m.topic, "r\xc3\xa9\n/\"\\\b\f\r\t");
	CHECK_STR(m.event, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	ch_msg_free(&m);
	CHECK_EQ(DEC2("[null,\"1\",\"\\ud83d\\ude00\",\"\\uD83D\\uDE00\",{}]", &m), 0);
	CHECK_STR(m.topic, "\xf0\x9f\x98\x80");
	CHECK_STR(m.event, "\xf0\x9f\x98\x80");
	ch_msg_free(&m);

	const char *bad[] = {
	    "[null,\"1\",\"\xff\",\"e\",{}]",             /* invalid byte */
	    "[null,\"1\",\"\xc3\",\"e\",{}]",             /* truncated sequence */
	    "[null,\"1\",\"\xc0\xaf\",\"e\",{}]",         /* overlong */
	    "[null,\"1\",\"\xe0\x80\xaf\",\"e\",{}]",     /* overlong */
	    "[null,\"1\",\"\xed\xa0\x80\",\"e\",{}]",     /* encoded surrogate */
	    "[null,\"1\",\"\xf4\x90\x80\x80\",\"e\",{}]", /* above U+10FFFF */
	    "[null,\"1\",\"\xf8\x88\x80\x80\x80\",\"e\",{}]",
	    "[null,\"1\",\"t\",\"\x80\",{}]",        /* lone continuation */
	    "[null,\"1\",\"t\",\"e\",{\"\xff\":1}]", /* anywhere in the frame */
	    "[null,\"\xe2\x82\",\"t\",\"e\",{}]",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_MSG(dec(CH_VSN_2, 0, bad[i], strlen(bad[i]), &m) == -1, "accepted #%zu", i);
}

static void
test_v2_decode_depth(void)
{
	/* Nesting is bounded (no recursion); deep but acceptable payloads pass. */
	size_t deep = CH_JSON_MAX_DEPTH + 10;
	char *s = malloc(64 + 2 * deep);
	for (int ok = 0; ok < 2; ok++) {
		size_t d = ok ? 200 : deep, n = 0;
		n += (size_t)sprintf(s, "[null,\"1\",\"t\",\"e\",");
		for (size_t i = 0; i < d; i++)
			s[n++] = '[';
		for (size_t i = 0; i < d; i++)
			s[n++] = ']';
		s[n++] = ']';
		ch_msg m;
		CHECK_EQ(dec(CH_VSN_2, 0, s, n, &m), ok ? 0 : -1);
		ch_msg_free(&m);
	}
	/* A frame of a million '[' fails fast and cleanly. */
	size_t big = 1000000;
	char *t = malloc(big);
	memset(t, '[', big);
	ch_msg m;
	CHECK_EQ(dec(CH_VSN_2, 0, t, big, &m), -1);
	memset(t, '{', big);
	CHECK_EQ(dec(CH_VSN_1, 0, t, big, &m), -1);
	free(t);
	free(s);
}

/* ---- V1 decoding --------------------------------------------------------------- */

static void
test_v1_decode(void)
{
	ch_msg m;
	CHECK_EQ(DEC1("{\"topic\":\"room:lobby\",\"event\":\"phx_join\",\"payload\":{\"a\":1},"
	              "\"ref\":\"1\"}",
	              &m),
	         0);
	CHECK(m.join_ref == NULL); /* absent */
	CHECK_STR(m.ref, "\"1\"");
	CHECK_STR(m.topic, "room:lobby");
	CHECK_STR(m.event, "phx_join");
	CHECK_STR(m.payload_json, "{\"a\":1}");
	ch_msg_free(&m);

	/* join_ref is read when present (Message.from_map!: Map.get(map, "join_ref")). */
	CHECK_EQ(DEC1("{ \"join_ref\" : 7 , \"ref\":null,\"payload\":[],\"event\":\"e\",\"topic\":"
	              "\"t\",\"other\":{\"x\":1}}",
	              &m),
	         0);
	CHECK_STR(m.join_ref, "7");
	CHECK_STR(m.ref, "null");
	CHECK_STR(m.payload_json, "[]");
	ch_msg_free(&m);

	/* Keys are compared after unescaping; the last duplicate wins. */
	CHECK_EQ(DEC1("{\"\\u0074opic\":\"a\",\"event\":\"e\",\"payload\":1,\"ref\":1,\"topic\":"
	              "\"b\"}",
	              &m),
	         0);
	CHECK_STR(m.topic, "b");
	CHECK_STR(m.payload_json, "1");
	ch_msg_free(&m);

	/* Phoenix's V1 serializer ignores the opcode: a binary frame is JSON too. */
	const char v1[] = "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":\"2\"}";
	CHECK_EQ(dec(CH_VSN_1, 1, v1, sizeof(v1) - 1, &m), 0);
	CHECK_STR(m.ref, "\"2\"");
	CHECK(m.bin == NULL);
	ch_msg_free(&m);
}

static void
test_v1_decode_errors(void)
{
	const char *bad[] = {
	    "",
	    "[\"1\",\"2\",\"t\",\"e\",{}]", /* V2 shape */
	    "{}",
	    "{\"event\":\"e\",\"payload\":{},\"ref\":null}",
	    "{\"topic\":\"t\",\"payload\":{},\"ref\":null}",
	    "{\"topic\":\"t\",\"event\":\"e\",\"ref\":null}",
	    "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{}}",
	    "{\"topic\":1,\"event\":\"e\",\"payload\":{},\"ref\":null}",
	    "{\"topic\":\"t\",\"event\":null,\"payload\":{},\"ref\":null}",
	    "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":null",
	    "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":null}}",
	    "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":null,}",
	    "{\"topic\" \"t\",\"event\":\"e\",\"payload\":{},\"ref\":null}",
	    "{topic:\"t\",\"event\":\"e\",\"payload\":{},\"ref\":null}",
	    "{\"topic\":\"\xff\",\"event\":\"e\",\"payload\":{},\"ref\":null}",
	    "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":nul}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ch_msg m;
		CHECK_MSG(dec(CH_VSN_1, 0, bad[i], strlen(bad[i]), &m) == -1, "accepted #%zu: %s",
		          i, bad[i]);
	}
	ch_msg m;
	CHECK_EQ(dec(CH_VSN_1, 1,
	             "\x00\x01\x01\x01\x01"
	             "abcd",
	             9, &m),
	         -1); /* a V2 binary push */
}

/* ---- V2 binary decoding -------------------------------------------------------- */

/* Builds a client push frame: <<0, sizes..., join_ref, ref, topic, event, data>>. */
static size_t
push_frame(uint8_t *f, const char *jr, const char *ref, const char *topic, const char *event,
           const void *data, size_t dl)
{
	size_t n = 0;
	f[n++] = 0;
	f[n++] = (uint8_t)strlen(jr);
	f[n++] = (uint8_t)strlen(ref);
	f[n++] = (uint8_t)strlen(topic);
	f[n++] = (uint8_t)strlen(event);
	memcpy(f + n, jr, strlen(jr)), n += strlen(jr);
	memcpy(f + n, ref, strlen(ref)), n += strlen(ref);
	memcpy(f + n, topic, strlen(topic)), n += strlen(topic);
	memcpy(f + n, event, strlen(event)), n += strlen(event);
	memcpy(f + n, data, dl), n += dl;
	return n;
}

static void
test_v2_decode_binary(void)
{
	uint8_t f[2048];
	ch_msg m;
	const uint8_t data[] = {0, 1, 2, 255, '"'};
	size_t n = push_frame(f, "3", "14", "room:lobby", "bin_echo", data, sizeof(data));
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 1, f, n, &m, NULL), 0);
	CHECK_STR(m.join_ref, "\"3\""); /* JSON string tokens: what a text reply echoes */
	CHECK_STR(m.ref, "\"14\"");
	CHECK_STR(m.topic, "room:lobby");
	CHECK_STR(m.event, "bin_echo");
	CHECK(m.payload == NULL && m.payload_json == NULL);
	CHECK_EQ(m.bin_len, sizeof(data));
	CHECK_MEM(m.bin, data, sizeof(data));
	ch_msg_free(&m);

	/* Empty join_ref, ref and data. */
	n = push_frame(f, "", "", "t", "e", "", 0);
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 1, f, n, &m, NULL), 0);
	CHECK_STR(m.join_ref, "\"\"");
	CHECK_STR(m.ref, "\"\"");
	CHECK(m.bin != NULL);
	CHECK_EQ(m.bin_len, 0);
	ch_msg_free(&m);

	/* Refs with characters JSON must escape. */
	n = push_frame(f, "a\"b", "\\\x01", "t", "e", "x", 1);
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 1, f, n, &m, NULL), 0);
	CHECK_STR(m.join_ref, "\"a\\\"b\"");
	CHECK_STR(m.ref, "\"\\\\\\u0001\"");
	char s[16];
	CHECK_EQ(ch_ref_string(m.ref, s, sizeof(s)), 2);
	CHECK_MEM(s, "\\\x01", 3);
	ch_msg_free(&m);

	/* Maximal sizes. */
	char big[256];
	memset(big, 'x', 255);
	big[255] = 0;
	n = push_frame(f, big, big, big, big, "d", 1);
	CHECK_EQ(n, 5 + 4 * 255 + 1);
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 1, f, n, &m, NULL), 0);
	CHECK_EQ(strlen(m.topic), 255);
	CHECK_EQ(strlen(m.ref), 257);
	ch_msg_free(&m);
}

static void
test_v2_decode_binary_errors(void)
{
	uint8_t f[64];
	ch_msg m;
	const char *err;
	size_t n = push_frame(f, "3", "4", "topic", "event", "data", 4);
	/* Every truncation inside the header and the sized fields. */
	for (size_t k = 0; k < n - 4; k++)
		CHECK_MSG(ch_msg_decode(CH_VSN_2, 1, f, k, &m, &err) == -1, "accepted %zu bytes",
		          k);
	/* Sizes exceeding the frame. */
	f[3] = 200;
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 1, f, n, &m, &err), -1);
	f[3] = 5;
	f[1] = f[2] = f[3] = f[4] = 255;
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 1, f, n, &m, &err), -1);
	/* Kinds other than push (reply, broadcast, unknown). */
	for (int kind = 1; kind < 256; kind *= 2) {
		n = push_frame(f, "3", "4", "topic", "event", "data", 4);
		f[0] = (uint8_t)kind;
		CHECK_EQ(ch_msg_decode(CH_VSN_2, 1, f, n, &m, &err), -1);
	}
	/* Invalid UTF-8 or NUL in topic / event / refs. */
	n = push_frame(f, "3", "4", "t\xff", "e", "d", 1);
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 1, f, n, &m, &err), -1);
	n = push_frame(f, "3", "4", "t", "\xc0\x80", "d", 1);
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 1, f, n, &m, &err), -1);
	n = push_frame(f, "\xe2\x82", "4", "t", "e", "d", 1);
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 1, f, n, &m, &err), -1);
	n = push_frame(f, "3", "4", "tt", "e", "d", 1);
	f[8] = 0; /* topic "t\0" */
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 1, f, n, &m, &err), -1);
	/* A text frame's JSON in a binary frame is not a push. */
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 1, U("[\"1\",\"2\",\"t\",\"e\",{}]"), &m, &err), -1);
}

/* ---- encoders ----------------------------------------------------------------- */

static void
test_encode_v2_text(void)
{
	rt_buf *b = NULL;
	/* Replies echo join_ref and ref. */
	CHECK_EQ(ch_encode_reply(&b, CH_VSN_2, "\"3\"", "\"4\"", "room:lobby", "ok",
	                         S("{\"back\":true}")),
	         CH_FRAME_TEXT);
	CHECK(b != NULL);
	CHECK_BUF(b, "[\"3\",\"4\",\"room:lobby\",\"phx_reply\",{\"response\":"
	             "{\"back\":true},\"status\":\"ok\"}]");
	/* The unmatched-topic reply of the conformance README. */
	CHECK_EQ(ch_encode_reply(&b, CH_VSN_2, NULL, "\"5\"", "room:nope", "error",
	                         S("{\"reason\":\"unmatched topic\"}")),
	         CH_FRAME_TEXT);
	CHECK_BUF(b, "[null,\"5\",\"room:nope\",\"phx_reply\",{\"response\":"
	             "{\"reason\":\"unmatched topic\"},\"status\":\"error\"}]");
	/* Heartbeat reply: response NULL is {}. */
	CHECK_EQ(ch_encode_reply(&b, CH_VSN_2, "null", "\"9\"", "phoenix", "ok", NULL, 0),
	         CH_FRAME_TEXT);
	CHECK_BUF(b, "[null,\"9\",\"phoenix\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
	/* Refs of any JSON type, verbatim. */
	CHECK_EQ(ch_encode_reply(&b, CH_VSN_2, "12", "1.50", "t", "ok", S("{}")), CH_FRAME_TEXT);
	CHECK_BUF(b, "[12,1.50,\"t\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
	CHECK_EQ(ch_encode_reply(&b, CH_VSN_2, "\"a\\u0062\"", "[1, 2]", "t", "ok", S("{}")),
	         CH_FRAME_TEXT);
	CHECK_BUF(b,
	          "[\"a\\u0062\",[1, 2],\"t\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
	/* A reply's response need not be an object. */
	CHECK_EQ(ch_encode_reply(&b, CH_VSN_2, "\"1\"", "\"2\"", "t", "ok", S("null")),
	         CH_FRAME_TEXT);
	CHECK_BUF(b, "[\"1\",\"2\",\"t\",\"phx_reply\",{\"response\":null,\"status\":\"ok\"}]");

	/* Pushes from the channel process: [join_ref, null, topic, event, payload]. */
	CHECK_EQ(ch_encode_message(&b, CH_VSN_2, "\"3\"", NULL, "room:lobby", "user_joined",
	                           S("{\"user\":\"u1\"}")),
	         CH_FRAME_TEXT);
	CHECK_BUF(b, "[\"3\",null,\"room:lobby\",\"user_joined\",{\"user\":\"u1\"}]");
	/* phx_error / phx_close: [join_ref, join_ref, topic, event, {}]. */
	CHECK_EQ(
	    ch_encode_message(&b, CH_VSN_2, "\"3\"", "\"3\"", "room:lobby", "phx_close", S("{}")),
	    CH_FRAME_TEXT);
	CHECK_BUF(b, "[\"3\",\"3\",\"room:lobby\",\"phx_close\",{}]");
	CHECK_EQ(
	    ch_encode_message(&b, CH_VSN_2, "\"3\"", "\"3\"", "room:lobby", "phx_error", NULL, 0),
	    CH_FRAME_TEXT);
	CHECK_BUF(b, "[\"3\",\"3\",\"room:lobby\",\"phx_error\",{}]");
	/* Broadcasts: [null, null, topic, event, payload]. */
	CHECK_EQ(ch_encode_broadcast(&b, CH_VSN_2, "room:lobby", "new_msg", S("{\"body\":\"hi\"}")),
	         CH_FRAME_TEXT);
	CHECK_BUF(b, "[null,null,\"room:lobby\",\"new_msg\",{\"body\":\"hi\"}]");
	CHECK_EQ(ch_encode_broadcast(&b, CH_VSN_2, "room:lobby", "presence_diff",
	                             S(" {\"joins\":{},\"leaves\":{}}")),
	         CH_FRAME_TEXT);
	CHECK_BUF(b, "[null,null,\"room:lobby\",\"presence_diff\", {\"joins\":{},\"leaves\":{}}]");
	rt_buf_release(b);
}

static void
test_encode_v1(void)
{
	rt_buf *b = rt_buf_alloc(0);
	CHECK_EQ(
	    ch_encode_reply(&b, CH_VSN_1, "\"3\"", "\"4\"", "room:lobby", "ok", S("{\"a\":1}")),
	    CH_FRAME_TEXT);
	CHECK_BUF(b, "{\"event\":\"phx_reply\",\"payload\":{\"response\":{\"a\":1},\"status\":"
	             "\"ok\"},\"ref\":\"4\",\"topic\":\"room:lobby\"}");
	CHECK_EQ(ch_encode_reply(&b, CH_VSN_1, NULL, "7", "phoenix", "ok", NULL, 0), CH_FRAME_TEXT);
	CHECK_BUF(b, "{\"event\":\"phx_reply\",\"payload\":{\"response\":{},\"status\":\"ok\"},"
	             "\"ref\":7,\"topic\":\"phoenix\"}");
	/* Pushes and broadcasts: ref null, no join_ref. */
	CHECK_EQ(ch_encode_message(&b, CH_VSN_1, "\"3\"", NULL, "room:lobby", "user_joined",
	                           S("{\"u\":1}")),
	         CH_FRAME_TEXT);
	CHECK_BUF(b, "{\"event\":\"user_joined\",\"payload\":{\"u\":1},\"ref\":null,\"topic\":"
	             "\"room:lobby\"}");
	CHECK_EQ(
	    ch_encode_message(&b, CH_VSN_1, "\"3\"", "\"3\"", "room:lobby", "phx_close", S("{}")),
	    CH_FRAME_TEXT);
	CHECK_BUF(
	    b, "{\"event\":\"phx_close\",\"payload\":{},\"ref\":\"3\",\"topic\":\"room:lobby\"}");
	CHECK_EQ(ch_encode_broadcast(&b, CH_VSN_1, "room:lobby", "new_msg", S("{\"body\":\"x\"}")),
	         CH_FRAME_TEXT);
	CHECK_BUF(b, "{\"event\":\"new_msg\",\"payload\":{\"body\":\"x\"},\"ref\":null,\"topic\":"
	             "\"room:lobby\"}");
	/* V1 does not check the payload's type. */
	CHECK_EQ(ch_encode_broadcast(&b, CH_VSN_1, "t", "e", S("[1]")), CH_FRAME_TEXT);
	CHECK_BUF(b, "{\"event\":\"e\",\"payload\":[1],\"ref\":null,\"topic\":\"t\"}");
	/* V1 cannot carry binary payloads (Phoenix raises). */
	CHECK_EQ(ch_encode_reply_bin(&b, CH_VSN_1, "\"1\"", "\"2\"", "t", "ok", "x", 1), -1);
	CHECK_EQ(ch_encode_message_bin(&b, CH_VSN_1, "\"1\"", "t", "e", "x", 1), -1);
	CHECK_EQ(ch_encode_broadcast_bin(&b, CH_VSN_1, "t", "e", "x", 1), -1);
	CHECK_EQ(b->len, 0);
	rt_buf_release(b);
}

static void
test_encode_binary(void)
{
	rt_buf *b = NULL;
	const uint8_t data[] = {1, 2, 3};
	/* Reply: <<1, len(join_ref), len(ref), len(topic), len(status), ...>>. */
	CHECK_EQ(ch_encode_reply_bin(&b, CH_VSN_2, "\"3\"", "\"14\"", "room:lobby", "ok", data, 3),
	         CH_FRAME_BINARY);
	CHECK_BUF(b, "\x01\x01\x02\x0a\x02"
	             "314room:lobbyok\x01\x02\x03");
	/* null refs are empty, number refs their text (to_string/1). */
	CHECK_EQ(ch_encode_reply_bin(&b, CH_VSN_2, NULL, "12", "t", "error", "", 0),
	         CH_FRAME_BINARY);
	CHECK_BUF(b, "\x01\x00\x02\x01\x05"
	             "12terror");
	CHECK_EQ(ch_encode_reply_bin(&b, CH_VSN_2, "\"\"", "null", "t", "ok", "z", 1),
	         CH_FRAME_BINARY);
	CHECK_BUF(b, "\x01\x00\x00\x01\x02"
	             "tokz");
	/* Server push: <<0, len(join_ref), len(topic), len(event), ...>> (no ref). */
	CHECK_EQ(ch_encode_message_bin(&b, CH_VSN_2, "\"3\"", "room:lobby", "bin", data, 3),
	         CH_FRAME_BINARY);
	CHECK_BUF(b, "\x00\x01\x0a\x03"
	             "3room:lobbybin\x01\x02\x03");
	CHECK_EQ(ch_encode_message_bin(&b, CH_VSN_2, NULL, "t", "e", NULL, 0), CH_FRAME_BINARY);
	CHECK_BUF(b, "\x00\x00\x01\x01"
	             "te");
	/* Broadcast: <<2, len(topic), len(event), topic, event, data>>. */
	CHECK_EQ(ch_encode_broadcast_bin(&b, CH_VSN_2, "room:lobby", "evt", data, 3),
	         CH_FRAME_BINARY);
	CHECK_BUF(b, "\x02\x0a\x03room:lobbyevt\x01\x02\x03");
	/* Arrays/objects as refs cannot be converted. */
	CHECK_EQ(ch_encode_reply_bin(&b, CH_VSN_2, "[1]", "\"2\"", "t", "ok", "", 0), -1);
	CHECK_EQ(ch_encode_message_bin(&b, CH_VSN_2, "{}", "t", "e", "", 0), -1);
	CHECK_EQ(b->len, 0);
	rt_buf_release(b);
}

static void
test_encode_binary_255_limit(void)
{
	char f255[256], f256[257], r255[258], r256[259];
	memset(f255, 'a', 255), f255[255] = 0;
	memset(f256, 'a', 256), f256[256] = 0;
	snprintf(r255, sizeof(r255), "\"%s\"", f255);
	snprintf(r256, sizeof(r256), "\"%s\"", f256);
	rt_buf *b = rt_buf_alloc(8);
	b = rt_buf_append(b, "keep", 4);

	CHECK_EQ(ch_encode_reply_bin(&b, CH_VSN_2, r255, r255, f255, f255, "d", 1),
	         CH_FRAME_BINARY);
	CHECK_EQ(b->len, 4 + 5 + 4 * 255 + 1);
	b->len = 4;
	CHECK_EQ(ch_encode_reply_bin(&b, CH_VSN_2, r256, "\"1\"", "t", "ok", "d", 1), -1);
	CHECK_EQ(ch_encode_reply_bin(&b, CH_VSN_2, "\"1\"", r256, "t", "ok", "d", 1), -1);
	CHECK_EQ(ch_encode_reply_bin(&b, CH_VSN_2, "\"1\"", "\"1\"", f256, "ok", "d", 1), -1);
	CHECK_EQ(ch_encode_reply_bin(&b, CH_VSN_2, "\"1\"", "\"1\"", "t", f256, "d", 1), -1);
	CHECK_EQ(ch_encode_message_bin(&b, CH_VSN_2, r255, f255, f255, "d", 1), CH_FRAME_BINARY);
	CHECK_EQ(b->len, 4 + 4 + 3 * 255 + 1);
	b->len = 4;
	CHECK_EQ(ch_encode_message_bin(&b, CH_VSN_2, r256, "t", "e", "d", 1), -1);
	CHECK_EQ(ch_encode_message_bin(&b, CH_VSN_2, "\"1\"", f256, "e", "d", 1), -1);
	CHECK_EQ(ch_encode_message_bin(&b, CH_VSN_2, "\"1\"", "t", f256, "d", 1), -1);
	CHECK_EQ(ch_encode_broadcast_bin(&b, CH_VSN_2, f255, f255, "d", 1), CH_FRAME_BINARY);
	CHECK_EQ(b->len, 4 + 3 + 2 * 255 + 1);
	b->len = 4;
	CHECK_EQ(ch_encode_broadcast_bin(&b, CH_VSN_2, f256, "e", "d", 1), -1);
	CHECK_EQ(ch_encode_broadcast_bin(&b, CH_VSN_2, "t", f256, "d", 1), -1);
	/* Failures leave what was there. */
	CHECK_EQ(b->len, 4);
	CHECK_MEM(b->data, "keep", 4);
	/* Text frames have no such limit. */
	CHECK_EQ(ch_encode_broadcast(&b, CH_VSN_2, f256, f256, S("{}")), CH_FRAME_TEXT);
	rt_buf_release(b);
}

static void
test_encode_errors(void)
{
	rt_buf *b = rt_buf_alloc(16);
	b = rt_buf_append(b, "x", 1);
	/* V2 pushes and broadcasts need a map payload (Phoenix raises ArgumentError). */
	CHECK_EQ(ch_encode_message(&b, CH_VSN_2, "\"1\"", NULL, "t", "e", S("[1]")), -1);
	CHECK_EQ(ch_encode_message(&b, CH_VSN_2, "\"1\"", NULL, "t", "e", S("\"s\"")), -1);
	CHECK_EQ(ch_encode_broadcast(&b, CH_VSN_2, "t", "e", S("null")), -1);
	CHECK_EQ(ch_encode_broadcast(&b, CH_VSN_2, "t", "e", S("")), -1);
	/* Invalid UTF-8 in strings (Jason raises). */
	CHECK_EQ(ch_encode_broadcast(&b, CH_VSN_2, "t\xff", "e", S("{}")), -1);
	CHECK_EQ(ch_encode_broadcast(&b, CH_VSN_2, "t", "\xc0\x80", S("{}")), -1);
	CHECK_EQ(ch_encode_reply(&b, CH_VSN_2, NULL, NULL, "t", "\xed\xa0\x80", S("{}")), -1);
	CHECK_EQ(ch_encode_reply(&b, CH_VSN_1, NULL, NULL, "t", "o\xff", S("{}")), -1);
	CHECK_EQ(ch_encode_message(&b, CH_VSN_1, NULL, NULL, "\xff", "e", S("{}")), -1);
	/* Missing strings, bad versions. */
	CHECK_EQ(ch_encode_reply(&b, CH_VSN_2, NULL, NULL, NULL, "ok", S("{}")), -1);
	CHECK_EQ(ch_encode_reply(&b, CH_VSN_2, NULL, NULL, "t", NULL, S("{}")), -1);
	CHECK_EQ(ch_encode_message(&b, CH_VSN_2, NULL, NULL, "t", NULL, S("{}")), -1);
	CHECK_EQ(ch_encode_message(&b, 0, NULL, NULL, "t", "e", S("{}")), -1);
	CHECK_EQ(ch_encode_reply(&b, 3, NULL, NULL, "t", "ok", S("{}")), -1);
	CHECK_EQ(ch_encode_broadcast_bin(&b, 3, "t", "e", "", 0), -1);
	CHECK_EQ(ch_encode_reply(NULL, CH_VSN_2, NULL, NULL, "t", "ok", S("{}")), -1);
	CHECK_EQ(b->len, 1);
	rt_buf_release(b);
}

static void
test_json_string_escaping(void)
{
	/* Jason's default escaping: quote, backslash, control characters only. */
	rt_buf *b = NULL;
	const char s[] = "a\"b\\c\x01\x1f\b\f\n\r\t/\xc3\xa9\x7f\xe2\x80\xa8<>&'";
	CHECK_EQ(ch_json_append_string(&b, s, sizeof(s) - 1), 0);
	CHECK_BUF(b, "\"a\\\"b\\\\c\\u0001\\u001F\\b\\f\\n\\r\\t/\xc3\xa9\x7f\xe2\x80\xa8<>&'\"");
	CHECK_EQ(ch_json_append_string(&b, "\0", 1), 0);
	CHECK_BUF(b, "\"\\u0000\"");
	CHECK_EQ(ch_json_append_string(&b, "", 0), 0);
	CHECK_BUF(b, "\"\"");
	CHECK_EQ(ch_json_append_string(&b, "ok\xff", 3), -1);
	CHECK_EQ(b->len, 0);
	/* In a frame. */
	CHECK_EQ(ch_encode_broadcast(&b, CH_VSN_2, "room:\"q\"", "e\n", S("{}")), CH_FRAME_TEXT);
	CHECK_BUF(b, "[null,null,\"room:\\\"q\\\"\",\"e\\n\",{}]");
	rt_buf_release(b);
}

static void
test_encode_cjson(void)
{
	rt_buf *b = NULL;
	cJSON *p = cJSON_CreateObject();
	cJSON_AddStringToObject(p, "body", "h\"i");
	cJSON_AddNumberToObject(p, "n", 3);
	CHECK_EQ(ch_encode_broadcast_cjson(&b, CH_VSN_2, "room:lobby", "new_msg", p),
	         CH_FRAME_TEXT);
	CHECK_BUF(b, "[null,null,\"room:lobby\",\"new_msg\",{\"body\":\"h\\\"i\",\"n\":3}]");
	CHECK_EQ(ch_encode_message_cjson(&b, CH_VSN_2, "\"2\"", NULL, "t", "e", p), CH_FRAME_TEXT);
	CHECK_BUF(b, "[\"2\",null,\"t\",\"e\",{\"body\":\"h\\\"i\",\"n\":3}]");
	CHECK_EQ(ch_encode_reply_cjson(&b, CH_VSN_1, NULL, "\"1\"", "t", "ok", p), CH_FRAME_TEXT);
	CHECK_BUF(b, "{\"event\":\"phx_reply\",\"payload\":{\"response\":{\"body\":\"h\\\"i\","
	             "\"n\":3},\"status\":\"ok\"},\"ref\":\"1\",\"topic\":\"t\"}");
	CHECK_EQ(ch_encode_reply_cjson(&b, CH_VSN_2, "\"1\"", "\"2\"", "t", "ok", NULL),
	         CH_FRAME_TEXT);
	CHECK_BUF(b, "[\"1\",\"2\",\"t\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]");
	cJSON *arr = cJSON_CreateArray();
	CHECK_EQ(ch_encode_broadcast_cjson(&b, CH_VSN_2, "t", "e", arr), -1);
	CHECK_EQ(ch_encode_reply_cjson(&b, CH_VSN_2, NULL, NULL, "t", "ok", arr), CH_FRAME_TEXT);
	CHECK_BUF(b, "[null,null,\"t\",\"phx_reply\",{\"response\":[],\"status\":\"ok\"}]");
	cJSON_Delete(arr);
	cJSON_Delete(p);
	rt_buf_release(b);
}

/* ---- round trips and refs -------------------------------------------------------- */

static void
test_roundtrip_v2_reply_echo(void)
{
	/* A client frame's refs come back byte for byte, whatever their JSON type. */
	const char *frames[] = {
	    "[\"3\",\"4\",\"room:lobby\",\"ping\",{\"q\":1}]",
	    "[3,4,\"room:lobby\",\"ping\",{\"q\":1}]",
	    "[null,null,\"room:lobby\",\"ping\",{\"q\":1}]",
	    "[\"\\u0033\",-4.0e1,\"room:lobby\",\"ping\",{\"q\":1}]",
	};
	const char *want[] = {
	    "[\"3\",\"4\",\"room:lobby\",\"phx_reply\",{\"response\":{\"q\":1},\"status\":\"ok\"}]",
	    "[3,4,\"room:lobby\",\"phx_reply\",{\"response\":{\"q\":1},\"status\":\"ok\"}]",
	    "[null,null,\"room:lobby\",\"phx_reply\",{\"response\":{\"q\":1},\"status\":\"ok\"}]",
	    ("[\"\\u0033\",-4.0e1,\"room:lobby\",\"phx_reply\",{\"response\":{"
	     "\"q\":1},\"status\":\"ok\"}]"),
	};
	rt_buf *b = NULL;
	for (size_t i = 0; i < sizeof(frames) / sizeof(frames[0]); i++) {
		ch_msg m;
		CHECK_EQ(dec(CH_VSN_2, 0, frames[i], strlen(frames[i]), &m), 0);
		CHECK_EQ(ch_encode_reply(&b, CH_VSN_2, m.join_ref, m.ref, m.topic, "ok",
		                         m.payload_json, m.payload_json_len),
		         CH_FRAME_TEXT);
		CHECK_MSG(b->len == strlen(want[i]) && memcmp(b->data, want[i], b->len) == 0,
		          "got %.*s", (int)b->len, (const char *)b->data);
		b->len = 0;
		ch_msg_free(&m);
	}
	rt_buf_release(b);
}

static void
test_roundtrip_encode_decode(void)
{
	/* What the encoders write, the decoders read back (text frames, both versions). */
	const char *topics[] = {"room:lobby", "r\xc3\xa9/\"\\\n\x01", ""};
	const char *refs[] = {"\"1\"", "12", "null", "\"a\\\"b\""};
	for (int vsn = 1; vsn <= 2; vsn++) {
		for (size_t t = 0; t < 3; t++) {
			for (size_t r = 0; r < 4; r++) {
				rt_buf *b = NULL;
				CHECK_EQ(ch_encode_message(&b, vsn, refs[(r + 1) % 4], refs[r],
				                           topics[t], topics[(t + 1) % 3],
				                           S("{\"k\":[1,\"v\"]}")),
				         CH_FRAME_TEXT);
				ch_msg m;
				CHECK_EQ(dec(vsn, 0, (const char *)b->data, b->len, &m), 0);
				CHECK_STR(m.topic, topics[t]);
				CHECK_STR(m.event, topics[(t + 1) % 3]);
				CHECK_STR(m.ref, refs[r]);
				if (vsn == 2)
					CHECK_STR(m.join_ref, refs[(r + 1) % 4]);
				else
					CHECK(m.join_ref == NULL); /* V1 never sends it */
				CHECK_STR(m.payload_json, "{\"k\":[1,\"v\"]}");
				ch_msg_free(&m);
				rt_buf_release(b);
			}
		}
	}
}

static void
test_roundtrip_binary_push_reply(void)
{
	/* phoenix.js: channel.push("bin_echo", arrayBuffer) -> binary push -> binary reply. */
	uint8_t f[128];
	const uint8_t data[] = {0xde, 0xad, 0xbe, 0xef};
	size_t n = push_frame(f, "3", "7", "room:lobby", "bin_echo", data, 4);
	ch_msg m;
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 1, f, n, &m, NULL), 0);
	rt_buf *b = NULL;
	CHECK_EQ(
	    ch_encode_reply_bin(&b, CH_VSN_2, m.join_ref, m.ref, m.topic, "ok", m.bin, m.bin_len),
	    CH_FRAME_BINARY);
	CHECK_BUF(b, "\x01\x01\x01\x0a\x02"
	             "37room:lobbyok\xde\xad\xbe\xef");
	/* A JSON reply to a binary push echoes the refs as strings. */
	CHECK_EQ(ch_encode_reply(&b, CH_VSN_2, m.join_ref, m.ref, m.topic, "ok", S("{\"n\":4}")),
	         CH_FRAME_TEXT);
	CHECK_BUF(b, "[\"3\",\"7\",\"room:lobby\",\"phx_reply\",{\"response\":"
	             "{\"n\":4},\"status\":\"ok\"}]");
	ch_msg_free(&m);
	rt_buf_release(b);
}

static void
test_refs(void)
{
	char s[8];
	CHECK_EQ(ch_ref_string("\"12\"", s, sizeof(s)), 2);
	CHECK_STR(s, "12");
	CHECK_EQ(ch_ref_string("12", s, sizeof(s)), 2);
	CHECK_STR(s, "12");
	CHECK_EQ(ch_ref_string("true", s, sizeof(s)), 4);
	CHECK_EQ(ch_ref_string("null", s, sizeof(s)), 0);
	CHECK_STR(s, "");
	CHECK_EQ(ch_ref_string(NULL, s, sizeof(s)), 0);
	CHECK_EQ(ch_ref_string("\"a\\u00e9\\\"\"", s, sizeof(s)), 4);
	CHECK_STR(s, "a\xc3\xa9\"");
	CHECK_EQ(ch_ref_string("\"1234567\"", s, sizeof(s)), 7);
	CHECK_EQ(ch_ref_string("\"12345678\"", s, sizeof(s)), -1);
	CHECK_EQ(ch_ref_string("12345678", s, sizeof(s)), -1);
	CHECK_EQ(ch_ref_string("[1]", s, sizeof(s)), -1);
	CHECK_EQ(ch_ref_string("{}", s, sizeof(s)), -1);
	CHECK_EQ(ch_ref_string("\"unterminated", s, sizeof(s)), -1);
	CHECK_EQ(ch_ref_string("\"a\"b", s, sizeof(s)), -1);
	CHECK_EQ(ch_ref_string("", s, sizeof(s)), -1);
	CHECK_EQ(ch_ref_string("1", s, 0), -1);

	CHECK(ch_ref_is_null(NULL));
	CHECK(ch_ref_is_null("null"));
	CHECK(!ch_ref_is_null("\"null\""));
	CHECK(!ch_ref_is_null("0"));

	CHECK(ch_ref_equal("\"3\"", "\"3\""));
	CHECK(ch_ref_equal("\"3\"", "\"\\u0033\""));
	CHECK(!ch_ref_equal("\"3\"", "3"));
	CHECK(!ch_ref_equal("\"3\"", "\"4\""));
	CHECK(ch_ref_equal(NULL, "null"));
	CHECK(!ch_ref_equal(NULL, "\"\""));
	CHECK(ch_ref_equal("7", "7"));
}

/* ---- robustness ------------------------------------------------------------------- */

/* xorshift, deterministic. */
static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void
test_fuzz_no_crash(void)
{
	static const char *seeds[] = {
	    "[\"1\",\"2\",\"room:lobby\",\"phx_join\",{\"a\":[1,2.5e-3,true,null,\"\\u00e9\"]}]",
	    "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{\"x\":\"\\ud83d\\ude00\"},\"ref\":"
	    "\"1\",\"join_ref\":\"1\"}",
	    "\x00\x01\x01\x04\x04"
	    "12t:abevntDATA",
	};
	static const size_t seed_len[] = {0, 0, 17};
	uint64_t st = 0x9e3779b97f4a7c15ull;
	uint8_t buf[256];
	int decoded = 0;
	for (int iter = 0; iter < 60000; iter++) {
		size_t si = (size_t)iter % 3;
		size_t n = seed_len[si] ? seed_len[si] : strlen(seeds[si]);
		memcpy(buf, seeds[si], n);
		/* Mutate: flip, insert, truncate. */
		int muts = 1 + (int)(rnd(&st) % 4);
		for (int k = 0; k < muts; k++) {
			size_t pos = (size_t)(rnd(&st) % (n ? n : 1));
			switch (rnd(&st) % 4) {
			case 0:
				buf[pos] = (uint8_t)rnd(&st);
				break;
			case 1:
				buf[pos] = "[]{},:\"\\0e.-nu"[rnd(&st) % 15];
				break;
			case 2:
				n = pos;
				break;
			default:
				if (n < sizeof(buf) - 1) {
					memmove(buf + pos + 1, buf + pos, n - pos);
					buf[pos] = (uint8_t)rnd(&st);
					n++;
				}
			}
		}
		for (int vsn = 1; vsn <= 2; vsn++) {
			for (int bin = 0; bin <= 1; bin++) {
				/* An exact-size heap copy, so ASan sees any overread. */
				uint8_t *copy = malloc(n ? n : 1);
				memcpy(copy, buf, n);
				ch_msg m;
				const char *err = NULL;
				int r = ch_msg_decode(vsn, bin, copy, n, &m, &err);
				CHECK(r == 0 || r == -1);
				if (r == 0) {
					decoded++;
					CHECK(m.topic && m.event && m.ref);
					/* Everything decoded can be echoed. */
					rt_buf *b = NULL;
					int e = m.bin
					            ? ch_encode_reply_bin(&b, 2, m.join_ref, m.ref,
					                                  m.topic, "ok", m.bin,
					                                  m.bin_len)
					            : ch_encode_reply(&b, vsn, m.join_ref, m.ref,
					                              m.topic, "ok", m.payload_json,
					                              m.payload_json_len);
					(void)e;
					rt_buf_release(b);
				} else {
					CHECK(err != NULL);
				}
				ch_msg_free(&m);
				free(copy);
			}
		}
	}
	printf("    %d of 240000 mutated frames decoded\n", decoded);
	CHECK(decoded > 0);
}

static void
test_every_prefix_refused(void)
{
	const char *v2 = "[\"1\",\"2\",\"room:lobby\",\"phx_join\",{\"a\":[1,\"\\u00e9\"]}]";
	const char *v1 = "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":\"1\"}";
	for (size_t k = 0; k < strlen(v2); k++) {
		char *c = malloc(k + 1);
		memcpy(c, v2, k);
		ch_msg m;
		CHECK_MSG(dec(CH_VSN_2, 0, c, k, &m) == -1, "accepted prefix %zu", k);
		free(c);
	}
	for (size_t k = 0; k < strlen(v1); k++) {
		char *c = malloc(k + 1);
		memcpy(c, v1, k);
		ch_msg m;
		CHECK_MSG(dec(CH_VSN_1, 0, c, k, &m) == -1, "accepted prefix %zu", k);
		free(c);
	}
}

/* ch_msg_decode_raw: the same routing fields and validated payload text,
 * without a cJSON tree; invalid payloads are still refused. */
static void
test_decode_raw_skips_the_tree(void)
{
	const char *f = "[\"1\",\"2\",\"room:a\",\"ping\",{\"n\":[1,2,{\"x\":null}]}]";
	ch_msg m;
	CHECK_EQ(ch_msg_decode_raw(CH_VSN_2, 0, (const uint8_t *)f, strlen(f), &m, NULL), 0);
	CHECK(m.payload == NULL);
	CHECK_STR(m.topic, "room:a");
	CHECK_STR(m.event, "ping");
	CHECK_EQ(m.payload_json_len, strlen("{\"n\":[1,2,{\"x\":null}]}"));
	CHECK_MEM(m.payload_json, "{\"n\":[1,2,{\"x\":null}]}", m.payload_json_len);
	ch_msg_free(&m);
	const char *bad[] = {"[\"1\",\"2\",\"room:a\",\"ping\",{\"n\":}]",
	                     "[\"1\",\"2\",\"room:a\",\"ping\",{\"n\":1]",
	                     "{\"topic\":\"t\",\"event\":\"e\",\"payload\":[1,,2],\"ref\":null}"};
	for (int i = 0; i < 3; i++) {
		int vsn = i < 2 ? CH_VSN_2 : CH_VSN_1;
		CHECK_EQ(
		    ch_msg_decode_raw(vsn, 0, (const uint8_t *)bad[i], strlen(bad[i]), &m, NULL),
		    -1);
	}
	const char *v1 = "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{\"a\":1},\"ref\":\"3\"}";
	CHECK_EQ(ch_msg_decode_raw(CH_VSN_1, 0, (const uint8_t *)v1, strlen(v1), &m, NULL), 0);
	CHECK(m.payload == NULL);
	CHECK_MEM(m.payload_json, "{\"a\":1}", 7);
	ch_msg_free(&m);
}

/* The raw decoder keeps topics and events that are not strings as raw
 * tokens (Phoenix's serializers take any value); the tree decoder refuses. */
static void
test_decode_raw_any_topic_and_event(void)
{
	ch_msg m;
	const char *f = "[\"1\",\"2\",{\"a\":[1]},7,{}]";
	CHECK_EQ(ch_msg_decode_raw(CH_VSN_2, 0, (const uint8_t *)f, strlen(f), &m, NULL), 0);
	CHECK(m.topic == NULL && m.event == NULL);
	CHECK_STR(m.topic_raw, "{\"a\":[1]}");
	CHECK_STR(m.event_raw, "7");
	ch_msg_free(&m);
	const char *nul = "{\"topic\":\"a\\u0000b\",\"event\":\"e\",\"payload\":{},\"ref\":null}";
	CHECK_EQ(ch_msg_decode_raw(CH_VSN_1, 0, (const uint8_t *)nul, strlen(nul), &m, NULL), 0);
	CHECK(m.topic == NULL);
	CHECK_STR(m.topic_raw, "\"a\\u0000b\"");
	CHECK_STR(m.event, "e");
	CHECK(m.event_raw == NULL);
	ch_msg_free(&m);
	CHECK_EQ(ch_msg_decode(CH_VSN_2, 0, (const uint8_t *)f, strlen(f), &m, NULL), -1);
	CHECK_EQ(ch_msg_decode(CH_VSN_1, 0, (const uint8_t *)nul, strlen(nul), &m, NULL), -1);
}

static void
test_reply_raw_topic_and_interpolable(void)
{
	rt_buf *b = NULL;
	CHECK_EQ(ch_encode_reply_raw_topic(&b, CH_VSN_2, NULL, "\"3\"", "[1,{\"x\":null}]", "error",
	                                   "{}", 2),
	         CH_FRAME_TEXT);
	CHECK_MEM(
	    b->data,
	    "[null,\"3\",[1,{\"x\":null}],\"phx_reply\",{\"response\":{},\"status\":\"error\"}]",
	    b->len);
	b->len = 0;
	CHECK_EQ(ch_encode_reply_raw_topic(&b, CH_VSN_1, NULL, "4", "null", "ok", NULL, 0),
	         CH_FRAME_TEXT);
	CHECK_MEM(b->data,
	          "{\"event\":\"phx_reply\",\"payload\":{\"response\":{},\"status\":\"ok\"},"
	          "\"ref\":4,\"topic\":null}",
	          b->len);
	/* the next plain reply escapes its topic again */
	b->len = 0;
	CHECK_EQ(ch_encode_reply(&b, CH_VSN_2, NULL, NULL, "a\"b", "ok", NULL, 0), CH_FRAME_TEXT);
	CHECK_MEM(b->data,
	          "[null,null,\"a\\\"b\",\"phx_reply\",{\"response\":{},\"status\":\"ok\"}]",
	          b->len);
	rt_buf_release(b);
	const char *yes[] = {
	    "null",         "true", "1.5e3", "-2", "\"s\"", "[]", "[[],\"a\",[104,[105]]]",
	    "[0, 1114111]", "[-0]"};
	const char *no[] = {"{}",      "{\"a\":1}", "[1.0]",  "[1e2]",  "[-1]", "[1114112]",
	                    "[55296]", "[57343]",   "[null]", "[true]", "[{}]", "[\"a\",{}]"};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		CHECK_MSG(ch_json_interpolable(yes[i]) == 1, "%s", yes[i]);
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		CHECK_MSG(ch_json_interpolable(no[i]) == 0, "%s", no[i]);
	CHECK_EQ(ch_json_interpolable(NULL), 0);
}

TEST_LIST = {
    TEST(test_decode_raw_any_topic_and_event),
    TEST(test_reply_raw_topic_and_interpolable),
    TEST(test_decode_raw_skips_the_tree),
    TEST(test_v2_decode_basic),
    TEST(test_v2_decode_refs_any_json),
    TEST(test_v2_decode_payload_any_json),
    TEST(test_v2_decode_extra_elements),
    TEST(test_v2_decode_errors),
    TEST(test_v2_decode_utf8),
    TEST(test_v2_decode_depth),
    TEST(test_v1_decode),
    TEST(test_v1_decode_errors),
    TEST(test_v2_decode_binary),
    TEST(test_v2_decode_binary_errors),
    TEST(test_encode_v2_text),
    TEST(test_encode_v1),
    TEST(test_encode_binary),
    TEST(test_encode_binary_255_limit),
    TEST(test_encode_errors),
    TEST(test_json_string_escaping),
    TEST(test_encode_cjson),
    TEST(test_roundtrip_v2_reply_echo),
    TEST(test_roundtrip_encode_decode),
    TEST(test_roundtrip_binary_push_reply),
    TEST(test_refs),
    TEST(test_fuzz_no_crash),
    TEST(test_every_prefix_refused),
    TEST_END,
};

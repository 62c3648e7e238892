/*
 * http_api.c: the chat app's HTTP API.
 *
 *   GET  /token?user_id=ID     {"token":"..."}: Phoenix.Token.sign(endpoint,
 *                              "user socket", ID); 400 without a usable user_id
 *   POST /api/broadcast        {"topic":T,"event":E,"payload":P}: broadcasts
 *                              to every subscriber of T; {"ok":true}
 *   POST /api/disconnect       {"user_id":ID}: broadcasts "disconnect" to
 *                              "users_socket:ID", closing that user's sockets;
 *                              {"ok":true}
 *
 * Bad JSON or missing fields answer 400 {"error":"..."}.  Handlers get the
 * launcher's app_ctx as udata (for the endpoint).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bin/launcher.h"
#include "channels/token.h"
#include "examples/chat/chat.h"

static void
chat_json(tp_response *resp, int status, const char *json)
{
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = rt_buf_from(json, strlen(json));
}

static void
chat_bad_request(tp_response *resp, const char *why)
{
	cJSON *obj = cJSON_CreateObject();
	char *json = NULL;
	if (obj && cJSON_AddStringToObject(obj, "error", why))
		json = cJSON_PrintUnformatted(obj);
	chat_json(resp, 400, json ? json : "{\"error\":\"bad request\"}");
	free(json);
	cJSON_Delete(obj);
}

/* Parses the request body as a JSON object; NULL (and a 400) otherwise. */
static cJSON *
chat_body_object(const tp_http_request *req, tp_response *resp)
{
	cJSON *body = req->body_len ? cJSON_ParseWithLength(req->body, req->body_len) : NULL;
	if (!cJSON_IsObject(body)) {
		cJSON_Delete(body);
		chat_bad_request(resp, "the body must be a JSON object");
		return NULL;
	}
	return body;
}

/*
 * A user id from a JSON value: a string, or an integer (printed in decimal,
 * as Phoenix interpolates it).  Returns its length, or -1 when it is neither
 * or does not fit CHAT_MAX_USER_ID bytes.
 */
static int
chat_user_id(const cJSON *v, char *out, size_t cap)
{
	int n = -1;
	if (cJSON_IsString(v) && v->valuestring)
		n = snprintf(out, cap, "%s", v->valuestring);
	else if (cJSON_IsNumber(v) && fabs(v->valuedouble) < 9.0e15 &&
	         v->valuedouble == floor(v->valuedouble))
		n = snprintf(out, cap, "%lld", (long long)v->valuedouble);
	if (n < 0 || (size_t)n >= cap || n > CHAT_MAX_USER_ID)
		return -1;
	return n;
}

static void
chat_get_token(const tp_http_request *req, tp_response *resp, void *udata)
{
	const app_ctx *ctx = udata;
	char user_id[CHAT_MAX_USER_ID + 1];
	ssize_t n =
	    tp_http_query_get(req->query.ptr, req->query.len, "user_id", user_id, sizeof(user_id));
	if (n < 0) {
		chat_bad_request(resp, "user_id is missing or too long");
		return;
	}
	if ((size_t)n != strlen(user_id)) {
		chat_bad_request(resp, "user_id holds a NUL byte");
		return;
	}
	char token[CH_TOKEN_MAX_LEN];
	if (ch_token_sign_string(ctx->endpoint, CHAT_TOKEN_SALT, user_id, token, sizeof(token)) <
	    0) {
		chat_json(resp, 500, "{\"error\":\"cannot sign the token\"}");
		return;
	}
	resp->status = 200;
	resp->content_type = "application/json";
	resp->body = rt_buf_appendf(rt_buf_alloc(strlen(token) + 16), "{\"token\":\"%s\"}", token);
}

/* The answer to a broadcast: ok; 400 for a bad field; 503 when this node's
 * subscribers got it but the other nodes could not be reached. */
static void
chat_broadcast_answer(tp_response *resp, int rc, const char *bad)
{
	if (rc == 0)
		chat_json(resp, 200, "{\"ok\":true}");
	else if (rc == CH_EREMOTE)
		chat_json(resp, 503,
		          "{\"error\":\"delivered on this node only: the cluster could "
		          "not take the broadcast\"}");
	else
		chat_bad_request(resp, bad);
}

static void
chat_post_broadcast(const tp_http_request *req, tp_response *resp, void *udata)
{
	const app_ctx *ctx = udata;
	cJSON *body = chat_body_object(req, resp);
	if (!body)
		return;
	const cJSON *topic = cJSON_GetObjectItemCaseSensitive(body, "topic");
	const cJSON *event = cJSON_GetObjectItemCaseSensitive(body, "event");
	const cJSON *payload = cJSON_GetObjectItemCaseSensitive(body, "payload");
	if (!cJSON_IsString(topic) || !cJSON_IsString(event) || !payload) {
		chat_bad_request(resp, "expected {\"topic\":T,\"event\":E,\"payload\":P}");
	} else if (!cJSON_IsObject(payload)) {
		chat_bad_request(resp, "payload must be a JSON object");
	} else {
		char *json = cJSON_PrintUnformatted(payload);
		int rc = json ? ch_endpoint_broadcast(ctx->endpoint, topic->valuestring,
		                                      event->valuestring, json)
		              : -1;
		chat_broadcast_answer(resp, rc, "topic or event too long");
		free(json);
	}
	cJSON_Delete(body);
}

static void
chat_post_disconnect(const tp_http_request *req, tp_response *resp, void *udata)
{
	const app_ctx *ctx = udata;
	cJSON *body = chat_body_object(req, resp);
	if (!body)
		return;
	char user_id[CHAT_MAX_USER_ID + 1];
	if (chat_user_id(cJSON_GetObjectItemCaseSensitive(body, "user_id"), user_id,
	                 sizeof(user_id)) < 0) {
		chat_bad_request(resp, "expected {\"user_id\":ID}");
	} else {
		char topic[sizeof("users_socket:") + CHAT_MAX_USER_ID];
		snprintf(topic, sizeof(topic), "users_socket:%s", user_id);
		chat_broadcast_answer(
		    resp, ch_endpoint_broadcast(ctx->endpoint, topic, "disconnect", "{}"),
		    "user_id too long");
	}
	cJSON_Delete(body);
}

const tp_route chat_http_routes[] = {
    {"GET", "/token", chat_get_token, NULL},
    {"POST", "/api/broadcast", chat_post_broadcast, NULL},
    {"POST", "/api/disconnect", chat_post_disconnect, NULL},
};

const size_t chat_http_nroutes = sizeof(chat_http_routes) / sizeof(chat_http_routes[0]);

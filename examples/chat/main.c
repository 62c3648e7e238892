/*
 * main.c: the example chat app (shared/reference-app.md): the chat room of
 * the Phoenix Channels guide plus the extra events and HTTP API that the
 * conformance suite exercises.  Everything is put together here and run by
 * the launcher (bin/launcher.h): `build/phx-chat --port 4000`.
 */
#include "bin/launcher.h"
#include "examples/chat/chat.h"

/* The development secret_key_base; production sets SECRET_KEY_BASE. */
#define CHAT_DEV_SECRET                                                                            \
	"phx-chat development secret key base: not for production, set SECRET_KEY_BASE"

static const char *const chat_static_aliases[] = {
    "/js/phoenix.js", "examples/chat/node_modules/phoenix/priv/static/phoenix.js", NULL};

static const app_def chat_app = {
    .name = "phx-chat",
    .description = "The Phoenix Channels chat example (phx-c).",
    .socket = &chat_user_socket,
    .routes = chat_http_routes,
    .nroutes = 0, /* set in main: the route count lives in http_api.c */
    .static_dir = "examples/chat/static",
    .static_aliases = chat_static_aliases,
    .default_secret = CHAT_DEV_SECRET,
};

int
main(int argc, char **argv)
{
	app_def app = chat_app;
	app.nroutes = chat_http_nroutes;
	return app_main(argc, argv, &app);
}

/*
 * An application built outside the tree against the installed library
 * (`make install PREFIX=...`, then `cc app.c $(pkg-config --cflags --libs
 * --static phx)`): one channel module, "echo:*", which replies to every
 * event with its own payload (a catch-all handle_in: no event table).  test/run.sh builds and runs it.
 */
#include <phx/bin/launcher.h>

static int
echo_join(ch_chan *ch, void *state, const char *topic, const ch_payload *params)
{
	(void)ch;
	(void)state;
	(void)topic;
	(void)params;
	return CH_OK;
}

static int
echo_in(ch_chan *ch, void *state, const char *event, const ch_payload *payload)
{
	(void)state;
	(void)event;
	ch_reply_payload(ch, "ok", payload);
	return CH_OK;
}

static const ch_channel_ops echo_channel = {
    .name = "EchoChannel", .join = echo_join, .handle_in = echo_in};
static const ch_route routes[] = {{"echo:*", &echo_channel}};
static const ch_socket_handler echo_socket = {.routes = routes, .nroutes = 1};
static const app_def echo_app = {
    .name = "echo-app",
    .description = "an external app on libphx: echo:* replies with what it gets",
    .socket = &echo_socket,
    .default_secret = "development-only-secret-development-only-secret-development-only!",
};

int
main(int argc, char **argv)
{
	return app_main(argc, argv, &echo_app);
}

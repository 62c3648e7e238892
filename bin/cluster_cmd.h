/*
 * cluster_cmd.h: `APP cluster --nodes N ...`, a small supervisor that runs N
 * nodes of one cluster on this machine, each a separate OS process of the
 * same executable (/proc/self/exe), for development and tests.
 *
 *     APP cluster --nodes N [--port P] [--one-port] [--cluster-port C]
 *                 [--pubsub redis://HOST:PORT] [node options...]
 *
 * Node i (1..N) is named node<i>@127.0.0.1 and runs
 *     APP --name node<i>@127.0.0.1 --port P+i-1
 *         --cluster-listen tcp://127.0.0.1:C+i-1 --peers <nodes 1..i-1's addresses>
 *         [node options...]
 * or, with --pubsub, `--pubsub URL` instead of --cluster-listen and --peers;
 * with --one-port every node listens on P with --reuse-port (the kernel
 * spreads connections over them).  C defaults to P+1000.  Node options (e.g.
 * --schedulers 1, --heartbeat-ms 200, --log-level debug) are passed to every
 * node unchanged; --name, --cluster-listen, --peers, --seed, --reuse-port
 * and --mint-token are the command's to set and are refused.  Without
 * --schedulers, each node gets the machine's cores shared out among the
 * nodes (at least one scheduler each).
 *
 * It prints one line per node started, on stdout:
 *     node2@127.0.0.1 http://127.0.0.1:4001 cluster tcp://127.0.0.1:5001 pid 1234
 * A node that dies is started again after a back-off (100 ms, doubling up
 * to 5 s; back to 100 ms once a node stayed up 30 s), with one line on
 * stderr per death and the line above again for its new pid.  A node that
 * exits 0 was stopped on purpose (a SIGTERM sent to its pid: it drained its
 * sockets and stopped) and is started again after 100 ms, without growing
 * the back-off: that is how a rolling restart goes under this command,
 * SIGTERM one node's pid, wait for its new pid to listen, next node.  A
 * node that exits 2 (bad command line) stops the whole command (exit 2).
 * SIGINT/SIGTERM to the command are forwarded to every node (SIGTERM: each
 * drains); it waits for them, forwards a second signal (the nodes stop at
 * once), sends SIGKILL to those still running 10 s after the nodes'
 * --drain-timeout-ms (default 30 s; 10 s after SIGINT or a second
 * signal) or at a third signal, and exits 0 (1 if some node had to be
 * killed).  Nodes get SIGTERM if the command itself dies
 * (PR_SET_PDEATHSIG).
 */
#ifndef bin_cluster_cmd_h
#define bin_cluster_cmd_h

#include "bin/launcher.h"

/* Runs the cluster command; argv[1] is "cluster".  Returns the exit code
 * (APP_EXIT_*).  Called by app_main from the main thread before anything is
 * started (no runtime threads exist). */
int app_cluster_main(int argc, char **argv, const app_def *app);

#endif /* bin_cluster_cmd_h */

/*
 * rt.h: the public API of the phx-c actor runtime, a BEAM-like runtime in C.
 *
 * Processes are lightweight actors: a behaviour (an ops table of callbacks),
 * private state allocated by the runtime, and a mailbox.  Handlers run to
 * completion on one of a few scheduler threads (green threads without stacks
 * of their own, like gen_server callbacks); a process waiting for a message
 * holds no thread and no stack.  Messages are copied into the receiver's
 * mailbox (plus one optional refcounted rt_buf for large immutable data);
 * send never blocks; messages between one pair of processes arrive in order.
 *
 * Links, monitors, exit signals and trap_exit follow Erlang: a process that
 * exits with a reason other than "normal" kills the processes linked to it
 * unless they trap exits, in which case they get an RT_MSG_EXIT message.
 * Monitors deliver RT_MSG_DOWN.  A handler that returns an error, or calls
 * rt_crash / RT_ASSERT, ends only its own process: links and monitors are
 * notified, its timers, name, fds and memory are released, and a crash
 * report is logged.
 *
 * Every scheduler thread runs a libev loop: processes can own file
 * descriptors (rt_io_*) and timers (rt_send_after) and learn of readiness and
 * timeouts as messages.  An idle scheduler sleeps in the loop.
 *
 * Out of memory: a node that cannot allocate aborts, with one line on stderr
 * (runtime/xalloc.h: rt_xmalloc and friends, used by every layer); limits
 * elsewhere (frame and request sizes, connection and channel caps) keep a
 * node from getting there.
 *
 * Thread-safety: rt_send, rt_spawn*, rt_exit, rt_whereis, rt_sup_* may be
 * called from any thread (scheduler or not); rt_wait_exit only from a thread
 * that is not a scheduler.  Everything that acts on "self" (rt_self,
 * rt_link, rt_monitor, rt_shutdown_child, rt_trap_exit, timers, io,
 * rt_register) must be called from inside a process's callback.
 *
 * Supervision trees follow OTP: supervisors start children in order, restart
 * them by strategy within a restart intensity, and shut them down in reverse
 * order ("shutdown", then "kill" after the child's shutdown_ms); a tree is
 * stopped with one exit signal to its root (rt_exit + rt_wait_exit).
 */
#ifndef runtime_rt_h
#define runtime_rt_h

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/buf.h"

/* ---------------------------------------------------------------------------
 * Pids and messages
 */

/* A process id: slot index (low 32 bits) and generation (high 32 bits).  A pid
 * is never reused for a later process in the same slot.  0 is no process. */
typedef uint64_t rt_pid;
#define RT_NOPID ((rt_pid)0)

/* Tags at and above this value are reserved for the runtime. */
#define RT_TAG_SYSTEM 0xFFFF0000u

enum {
	RT_MSG_EXIT = RT_TAG_SYSTEM + 1, /* a trapped exit signal: payload rt_exit_info */
	RT_MSG_DOWN,                     /* a monitor fired: payload rt_down_info */
	RT_MSG_IO,                       /* fd readiness: payload rt_io_event */
};

/* A message.  The header is followed by `size` bytes of payload (rt_msg_data),
 * aligned for any type.  A handler borrows the message for the duration of
 * the call: to keep data, copy it (or retain `buf`). */
typedef struct rt_msg {
	struct rt_msg *_Atomic next; /* mailbox link (private) */
	uint32_t tag;                /* application tag, or RT_MSG_* */
	uint32_t size;               /* payload bytes */
	rt_pid from;                 /* sender, RT_NOPID when sent from outside a process */
	rt_buf *buf;                 /* optional attached buffer, released with the message */
} rt_msg;

static inline void *
rt_msg_data(const rt_msg *m)
{
	return (void *)(m + 1);
}

typedef struct rt_exit_info {
	rt_pid pid;    /* the process that exited (or sent the signal) */
	char reason[]; /* "normal", "shutdown", "killed", "noproc", or a crash reason */
} rt_exit_info;

typedef struct rt_down_info {
	uint64_t ref;  /* the monitor reference returned by rt_monitor */
	rt_pid pid;    /* the monitored process */
	char reason[]; /* its exit reason ("noproc" if it did not exist) */
} rt_down_info;

/* ---------------------------------------------------------------------------
 * Behaviours
 */

/* Return values of init and handle. */
enum {
	RT_OK = 0,    /* keep running */
	RT_STOP = 1,  /* exit with the reason given to rt_stop (default "normal") */
	RT_ERROR = -1 /* crash: reason set by rt_stop or "error returned by handler" */
};

typedef struct rt_behaviour {
	const char *name;  /* for crash reports and logs */
	size_t state_size; /* bytes of private state, zeroed, owned by the runtime */
	/* Runs first, in the new process, with a copy of the spawn argument. */
	int (*init)(void *state, const void *arg, size_t arg_size);
	/* Handles one message (borrowed).  Required. */
	int (*handle)(void *state, rt_msg *msg);
	/* Runs once when the process exits, for any reason: after an untrappable
	 * kill with reason "killed" (unlike Erlang, since in C this is where the
	 * state's heap memory is released: do only that then). */
	void (*terminate)(void *state, const char *reason);
	/* Optional: runs after each batch of messages (to coalesce work such as writes). */
	void (*flush)(void *state);
} rt_behaviour;

/* ---------------------------------------------------------------------------
 * Runtime lifecycle
 */

typedef enum rt_log_level {
	RT_LOG_ERROR = 0,
	RT_LOG_WARNING,
	RT_LOG_INFO,
	RT_LOG_DEBUG,
} rt_log_level;

typedef struct rt_config {
	int schedulers;     /* scheduler threads; 0: one per core */
	uint32_t max_procs; /* capacity of the process table; 0: 4,194,304 */
	int budget;         /* messages per process per turn; 0: 100 */
	rt_log_level log_level;
} rt_config;

/* Starts the scheduler threads.  Returns 0, or -1 if already started or out of resources. */
int rt_start(const rt_config *cfg);

/* Stops the schedulers, then ends every remaining process: terminate runs
 * with reason "shutdown" (no links or monitors fire any more), and all
 * memory is released.  Better: shut the application's supervision tree down
 * first.  From a non-scheduler thread only. */
void rt_shutdown(void);

/* Number of scheduler threads. */
int rt_schedulers(void);

/* Live processes (approximate while schedulers run). */
uint64_t rt_process_count(void);

/* ---------------------------------------------------------------------------
 * Processes
 */

enum {
	RT_SPAWN_LINK = 1 << 0,    /* link the caller and the child atomically */
	RT_SPAWN_MONITOR = 1 << 1, /* monitor the child; the ref is stored in *mref */
};

/* Spawns a process running `b`.  `arg` (arg_size bytes) is copied and given to
 * init.  Returns the new pid, or RT_NOPID when the process table is full. */
rt_pid rt_spawn(const rt_behaviour *b, const void *arg, size_t arg_size);
rt_pid rt_spawn_opt(const rt_behaviour *b, const void *arg, size_t arg_size, int flags,
                    uint64_t *mref);

/* Spawns a process pinned to scheduler `sched` (0..rt_schedulers()-1), e.g.
 * one listener per scheduler.  Returns RT_NOPID on a bad index or a full table. */
rt_pid rt_spawn_on(int sched, const rt_behaviour *b, const void *arg, size_t arg_size);

/* The calling process; RT_NOPID outside a process. */
rt_pid rt_self(void);

/* The calling process's state, and behaviour name. */
void *rt_self_state(void);

/* True while the process exists. */
bool rt_alive(rt_pid pid);

/* The scheduler pid is pinned to (rt_pin, rt_io_open, rt_spawn_on), or -1
 * when it is free to move or does not exist. */
int rt_home(rt_pid pid);

/* True when pid is alive, has run its init, is not exiting, and is pinned to
 * the scheduler of the calling process (which is not pid).  Such a process
 * cannot run until the caller's callback returns, so code that knows it (a
 * dispatcher delivering to connections of its own scheduler) may touch data
 * the process owns until then.  False outside a process. */
bool rt_local(rt_pid pid);

/* rt_local, and pid's mailbox is empty (nothing is queued for it that a
 * caller delivering straight into its data would overtake).  One lookup. */
bool rt_local_idle(rt_pid pid);

/* Messages waiting in pid's mailbox (approximate, counted modulo 65,536; 0
 * for a dead pid): for senders that must bound what they queue for a slow
 * receiver. */
uint32_t rt_msgq_len(rt_pid pid);

/* Formats a pid as <0.INDEX.GEN> into buf (at least 32 bytes); returns buf. */
char *rt_pid_str(rt_pid pid, char *buf, size_t len);

/* Sends a message with a copy of `size` bytes of `data`.  Never blocks.
 * Returns 0, or -1 when the receiver does not exist (the message is dropped,
 * as in Erlang: the caller may ignore it). */
int rt_send(rt_pid to, uint32_t tag, const void *data, size_t size);

/* Like rt_send, and attaches `buf` (the message takes over this reference). */
int rt_send_buf(rt_pid to, uint32_t tag, const void *data, size_t size, rt_buf *buf);

/* Two-step send: allocate a message with room for `size` payload bytes, fill
 * rt_msg_data(m), then rt_send_msg (which takes ownership in all cases). */
rt_msg *rt_msg_alloc(uint32_t tag, size_t size);
int rt_send_msg(rt_pid to, rt_msg *m);
void rt_msg_free(rt_msg *m);

/* Sends m as rt_send_msg does but leaves m->from as it is: for a relay that
 * carries another process's message (a PubSub partition keeping a
 * publisher's order), whose receiver must see the original sender. */
int rt_forward_msg(rt_pid to, rt_msg *m);

/* The runtime's small-block allocator: per-thread free lists per size class
 * (32 to 2,048 bytes; larger sizes go to malloc), no lock and no atomic, for
 * blocks a process allocates and frees by the thousand (queue entries).
 * Blocks carry no header: rt_free is given the size rt_alloc was.  Never NULL
 * (aborts when out of memory). */
void *rt_alloc(size_t size);
void rt_free(void *p, size_t size);

/* Ends the calling process's turn after the message being handled: the
 * rest of its mailbox waits behind the other runnable processes of its
 * scheduler (flush runs first).  For handlers whose messages vary widely in
 * cost, e.g. a broadcast to 10,000 connections. */
void rt_yield(void);

/* Sets the reason for a following RT_STOP or RT_ERROR return; returns RT_STOP. */
int rt_stop(const char *reason);

/*
 * Ends the calling process now with a crash reason (never returns), as an
 * Erlang exception does.  Only valid inside a process callback (init, handle,
 * flush, terminate); outside one it prints the reason and aborts.
 *
 * It longjmps from the handler straight back to the scheduler: no code of the
 * interrupted call runs again, nor any cleanup of the functions on its C stack.
 * So a crash does NOT release:
 *   - heap memory the handler malloc'd (or rt_alloc'd) and has not yet stored
 *     in the process state: local buffers, strings, cJSON trees it built or
 *     parsed and did not hand over (channels free the payload they pass a
 *     channel callback themselves);
 *   - rt_buf references and rt_msg_alloc'd messages held in locals (not yet
 *     sent);
 *   - locks the handler holds (a held mutex stays locked: never crash while
 *     holding one), and fds or FILEs opened outside rt_io_open.
 * It does release, as for any exit:
 *   - the process state: terminate runs with the crash reason (even after a
 *     crash in init, on the state init left, zeroed at first), so whatever is
 *     reachable from the state is freed there; a crash inside terminate skips
 *     the rest of terminate;
 *   - the message being handled and its attached rt_buf;
 *   - the mailbox, the process's timers, its rt_io fds (closed), its
 *     registered name, and its monitors;
 *   - links and monitors fire: linked processes get the exit signal with the
 *     reason, monitoring processes RT_MSG_DOWN; a crash report is logged.
 */
_Noreturn void rt_crash(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define RT_ASSERT(cond)                                                                            \
	do {                                                                                       \
		if (!(cond))                                                                       \
			rt_crash("assertion failed: %s (%s:%d)", #cond, __FILE__, __LINE__);       \
	} while (0)

/* Sends an exit signal to `pid` with `reason`, as erlang:exit/2: "kill" cannot
 * be trapped; "normal" is ignored unless trapped; anything else kills a
 * process that does not trap exits.  Returns 0 or -1 (no such process). */
int rt_exit(rt_pid pid, const char *reason);

/* ---------------------------------------------------------------------------
 * Links, monitors, trap_exit (calling process only)
 */

/* Links self and pid.  If pid does not exist, self gets an exit signal "noproc". */
void rt_link(rt_pid pid);
void rt_unlink(rt_pid pid);

/* Monitors pid; returns a reference.  A DOWN message (RT_MSG_DOWN) comes when
 * it exits, at once with reason "noproc" if it does not exist. */
uint64_t rt_monitor(rt_pid pid);

/* Removes a monitor; no DOWN message for it is delivered afterwards. */
void rt_demonitor(uint64_t ref);

/* Turns exit signals into RT_MSG_EXIT messages; returns the previous value. */
bool rt_trap_exit(bool on);

/* A timeout that never expires (rt_shutdown_child, rt_wait_exit, shutdown_ms). */
#define RT_INFINITY UINT32_MAX

/* Shuts pid down as an OTP supervisor shuts a child down, without blocking:
 * monitors it, sends it the exit signal `reason` (NULL: "shutdown"), and
 * kills it ("kill") if it is still alive timeout_ms later (0: kills it at
 * once; RT_INFINITY: never).  The caller gets one RT_MSG_DOWN with the
 * returned reference when pid is gone, whatever ended it: reason "killed"
 * when it had to be killed, "noproc" when it was already gone; the kill
 * timer is cancelled then.  rt_demonitor(ref) drops both the DOWN and the
 * pending kill (the exit signal is already sent).  Calling process only. */
uint64_t rt_shutdown_child(rt_pid pid, const char *reason, uint32_t timeout_ms);

/* Waits, blocking the calling thread, until pid has exited or timeout_ms
 * have passed (RT_INFINITY: no limit); no polling: a short-lived process
 * monitors pid and wakes the caller through a condition variable.  Returns 0
 * when pid is gone (or never existed), -1 on timeout or when called from a
 * scheduler thread (that would block its processes: use rt_shutdown_child
 * or rt_monitor there).  For the main thread (stopping the node). */
int rt_wait_exit(rt_pid pid, uint32_t timeout_ms);

/* ---------------------------------------------------------------------------
 * Registered names
 */

/* Registers self under `name` (≤ 63 bytes).  Returns 0, or -1 if the name is
 * taken or self already has a name.  The name is released when self exits. */
int rt_register(const char *name);
int rt_unregister(const char *name);
rt_pid rt_whereis(const char *name);

/* ---------------------------------------------------------------------------
 * Timers (owned by the calling process, cancelled when it exits)
 */

typedef uint64_t rt_timer;

/* Delivers a message {tag, copy of data} to `to` after `ms` milliseconds.
 * Returns a timer reference (never 0). */
rt_timer rt_send_after(uint64_t ms, rt_pid to, uint32_t tag, const void *data, size_t size);

/* Cancels a timer of the calling process.  Returns true when the message had
 * not been delivered yet: it never will be.  False when already delivered or
 * unknown. */
bool rt_cancel_timer(rt_timer t);

/* Timers pending in the whole runtime (for tests and stats). */
uint64_t rt_timer_count(void);

/* ---------------------------------------------------------------------------
 * File descriptors
 */

enum {
	RT_IO_READ = 1,
	RT_IO_WRITE = 2,
};

typedef struct rt_io rt_io;

typedef struct rt_io_event {
	rt_io *io;
	int revents; /* RT_IO_READ | RT_IO_WRITE seen since the last event */
	void *udata;
} rt_io_event;

/* Watches `fd` (non-blocking) for `events` on the caller's scheduler; the
 * caller is pinned to that scheduler from now on.  Readiness arrives as
 * RT_MSG_IO messages (level-triggered, at most one pending per watcher).
 * The process owns the fd: it is closed by rt_io_close or when the process
 * exits. */
rt_io *rt_io_open(int fd, int events, void *udata);
void rt_io_set(rt_io *io, int events);
int rt_io_fd(const rt_io *io);
/* Stops watching and closes the fd. */
void rt_io_close(rt_io *io);

/* Pins the calling process to the scheduler it runs on (for processes that own
 * per-thread resources).  Returns the scheduler index. */
int rt_pin(void);

/* The scheduler index the caller runs on, -1 outside a scheduler. */
int rt_scheduler_id(void);

/* The libev loop of the calling scheduler (for transports that need raw watchers;
 * only for pinned processes). */
struct ev_loop *rt_loop(void);

/* ---------------------------------------------------------------------------
 * Supervisors
 */

typedef enum rt_restart {
	RT_PERMANENT, /* always restarted */
	RT_TRANSIENT, /* restarted after an abnormal exit */
	RT_TEMPORARY, /* never restarted */
} rt_restart;

typedef enum rt_strategy {
	RT_ONE_FOR_ONE,
	RT_ONE_FOR_ALL,
	RT_REST_FOR_ONE,
	RT_SIMPLE_ONE_FOR_ONE, /* dynamic: children of one spec, added by rt_sup_start_child */
} rt_strategy;

typedef struct rt_child_spec {
	const char *id; /* unique within the supervisor */
	const rt_behaviour *behaviour;
	const void *arg; /* copied by the supervisor (arg_size bytes) */
	size_t arg_size;
	rt_restart restart;
	/* 0: brutal kill; else "shutdown" then "kill" after this (rt_shutdown_child);
	 * RT_INFINITY: wait for as long as it takes (children that are supervisors,
	 * or that bound their own shutdown). */
	uint32_t shutdown_ms;
	/* 1 + the scheduler to pin the child to (as rt_spawn_on: one listener per
	 * scheduler); 0: free to move. */
	int pin;
} rt_child_spec;

typedef struct rt_sup_spec {
	rt_strategy strategy;
	int intensity;      /* max restarts ...           (default 3 when both are 0) */
	uint32_t period_ms; /* ... within this window     (default 5000) */
	const rt_child_spec *children;
	size_t nchildren; /* for RT_SIMPLE_ONE_FOR_ONE: exactly one template (restart, shutdown) */
} rt_sup_spec;

/* Starts a supervisor process (linked to the caller when called from a
 * process).  The spec (and its arrays) is copied.  Children start in order. */
rt_pid rt_sup_start(const rt_sup_spec *spec);

/* Dynamic supervisors: start one more child running `b` with its own argument
 * (copied), restarted and shut down as the template spec says.  The child
 * starts asynchronously; its pid is returned at once, or RT_NOPID when the
 * supervisor is gone.  Callable from any thread. */
rt_pid rt_sup_start_child(rt_pid sup, const rt_behaviour *b, const void *arg, size_t arg_size);

/* Terminates a child (of a dynamic supervisor, or one added with
 * rt_sup_add_child / rt_sup_start_under) as its shutdown spec says; it is not
 * restarted.  0, or -1 when the supervisor is gone.  Any thread. */
int rt_sup_terminate_child(rt_pid sup, rt_pid child);

/* Static supervisors (not RT_SIMPLE_ONE_FOR_ONE): adds one more child after
 * the existing ones, as OTP's supervisor:start_child/2: started now, restarted
 * per spec and strategy, shut down first (reverse start order).  spec is
 * copied (its id is not: a string that outlives the supervisor).  The pid is
 * returned at once (the supervisor learns of it before of its exit), or
 * RT_NOPID when the supervisor is gone or the spec is bad.  Any thread. */
rt_pid rt_sup_add_child(rt_pid sup, const rt_child_spec *spec);

/* Starts a supervisor as a child of the static supervisor `parent` (a
 * subtree; RT_NOPID: as rt_sup_start).  Such a child is "significant" (OTP's
 * auto_shutdown = any_significant): it is never restarted; if it exits
 * without its parent asking, the parent shuts every other child down and
 * exits "shutdown" too (a subtree that gives up takes its parent down).  Its
 * shutdown is RT_INFINITY.  Returns its pid at once, or RT_NOPID.  Any thread. */
rt_pid rt_sup_start_under(rt_pid parent, const char *id, const rt_sup_spec *spec);

/* ---------------------------------------------------------------------------
 * Logging (to stderr)
 */

void rt_log_set_level(rt_log_level level);
rt_log_level rt_log_get_level(void);
void rt_log(rt_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define rt_log_error(...) rt_log(RT_LOG_ERROR, __VA_ARGS__)
#define rt_log_warning(...) rt_log(RT_LOG_WARNING, __VA_ARGS__)
#define rt_log_info(...) rt_log(RT_LOG_INFO, __VA_ARGS__)
#define rt_log_debug(...)                                                                          \
	do {                                                                                       \
		if (rt_log_get_level() >= RT_LOG_DEBUG)                                            \
			rt_log(RT_LOG_DEBUG, __VA_ARGS__);                                         \
	} while (0)

/* Monotonic time in milliseconds / nanoseconds, and wall clock in milliseconds. */
int64_t rt_now_ms(void);
int64_t rt_now_ns(void);
int64_t rt_wall_ms(void);

#endif /* runtime_rt_h */

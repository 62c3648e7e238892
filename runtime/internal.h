/*
 * internal.h: structures shared by the runtime's own files.  Nothing outside
 * runtime/ includes it.
 *
 * Ownership of the main structures:
 * - rt_proc: created by any thread (spawn); afterwards its fields are touched
 *   only by the scheduler thread running it (one at a time), except the
 *   mailbox head (any sender) and rq_next (run queues).  Freed through the
 *   epoch-based reclamation below once no thread can still hold a pointer.
 * - sched: one per scheduler thread; its loop, local run queue and timers are
 *   the thread's own; the inject queue and command queue are shared (mutex).
 */
#ifndef runtime_internal_h
#define runtime_internal_h

#include <ev.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>

#include "runtime/pidmap.h"
#include "runtime/rt.h"
#include "runtime/xalloc.h"

/* System signals travel in the mailbox with the messages, so that ordering
 * between a pair of processes holds for both (as erts does it). */
enum {
	SIG_INIT = RT_TAG_SYSTEM + 0x100, /* payload: spawn argument */
	SIG_LINK,                         /* from: the linker */
	SIG_UNLINK,
	SIG_EXIT,      /* payload: rt_exit_info; an exit signal sent by rt_exit */
	SIG_EXIT_LINK, /* payload: rt_exit_info; a linked process exited */
	SIG_MONITOR,   /* payload: uint64 ref; from: the watcher */
	SIG_DEMONITOR, /* payload: uint64 ref */
	SIG_TIMER,     /* the message is a timer record (timer.c) */
	SIG_IO,        /* payload: rt_io* */
	SIG_KILL,      /* a timer of rt_shutdown_child: payload kill_req (never handled) */
};

/* What the kill timer of rt_shutdown_child carries to its owner. */
typedef struct kill_req {
	uint64_t ref; /* the monitor */
	rt_pid pid;   /* to kill if still monitored */
} kill_req;

/* Process flags. */
enum {
	PF_TRAP_EXIT = 1 << 0,
	PF_EXITING = 1 << 1,
	PF_STARTED = 1 << 2, /* init has run */
};

/* Rarely used per-process data, allocated on first use. */
typedef struct proc_ext {
	pidmap links;
	struct mon {
		uint64_t ref;
		rt_pid pid;
		rt_timer kill; /* mons_out of rt_shutdown_child: its kill timer, or 0 */
	} * mons_out;          /* monitors I hold */
	uint32_t nout, capout;
	struct mon *mons_in; /* monitors on me */
	uint32_t nin, capin;
	/* ref + 2 -> index in mons_out ([0]) / mons_in ([1]), each built past
	 * MON_INDEX_MIN entries (a tracker shard holds one monitor per tracked
	 * process); NULL until then: most processes hold one or two monitors */
	struct mon_index {
		pidmap idx[2];
	} * midx;
	struct timer_rec *timers; /* pending timers I own (doubly linked) */
	struct rt_io *ios;        /* fds I own (singly linked) */
	char *name;               /* registered name */
} proc_ext;

/* 64 bytes: an idle process costs one 64-byte block (+ a mailbox stub). */
typedef struct rt_proc {
	/* Mailbox: an intrusive MPSC queue (Vyukov, as Pony's messageq).  Senders
	 * exchange mb_head; bit 0 of mb_head means "empty and not scheduled", and
	 * the push that clears it schedules the process.  mb_tail is the
	 * consumer's: the message it points to is the stub, i.e. the last one
	 * handed out, freed by the next pop. */
	rt_msg *_Atomic mb_head;
	rt_msg *mb_tail;
	struct rt_proc *rq_next; /* run queue link: on at most one queue at a time */
	rt_pid pid;
	const rt_behaviour *beh;
	union {
		proc_ext *ext;         /* while alive */
		uint64_t retire_epoch; /* once retired (ebr.c) */
	};
	const char *reason; /* exit reason while exiting (static or malloc'd: reason_owned) */
	/* Messages pushed (senders, atomic add) and popped (the consumer alone, a
	 * plain store): their difference modulo 2^16 is the queue length, for
	 * rt_msgq_len's limits. */
	_Atomic uint16_t mb_in;
	_Atomic uint16_t mb_out;
	int16_t home;  /* pinned scheduler, -1 when free to move */
	uint8_t flags; /* PF_* */
	uint8_t reason_owned;
	_Alignas(16) unsigned char state[];
} rt_proc;

/* ------------------------------------------------------------------ epochs */

/* Epoch-based reclamation: a thread is "online" while it may hold pointers to
 * processes read from the table.  Scheduler threads are online except while
 * sleeping and pass quiescent points between process runs; other threads go
 * online only around one send/spawn.  A retired process is freed two epochs
 * later, when no thread can still see it. */
typedef struct ebr_thread {
	_Atomic uint64_t epoch; /* last epoch observed, or EBR_OFFLINE */
	struct ebr_thread *next;
	rt_proc *ret_head; /* retired processes, oldest first, linked through rq_next */
	rt_proc *ret_tail;
	uint64_t nretired;
	uint32_t ticks; /* quiescent points passed (paces epoch advances) */
} ebr_thread;

#define EBR_BATCH 64 /* retirements between two attempts to advance the epoch */

#define EBR_OFFLINE UINT64_MAX

void ebr_register(ebr_thread *t);
void ebr_online(ebr_thread *t);
void ebr_offline(ebr_thread *t);
void ebr_quiescent(ebr_thread *t);
void ebr_retire(ebr_thread *t, rt_proc *p);
void ebr_drain_all(ebr_thread *t);
void ebr_foreign_enter(void);
void ebr_foreign_leave(void);
void ebr_free_foreign(void);
void rt_alloc_thread_fini(void);
void ht_thread_fini(void);

/* ------------------------------------------------------------------ table */

/* A table of generation-checked handles (pids, timer refs). */
typedef struct handle_slot {
	void *_Atomic ptr;
	_Atomic uint32_t gen;
} handle_slot;

/* Live-handle counter, striped so that threads counting spawns and exits do
 * not share one cache line; ht_live sums the stripes. */
#define HT_STRIPES 8
typedef struct ht_stripe {
	_Alignas(64) _Atomic int64_t n;
} ht_stripe;

typedef struct handle_table {
	handle_slot *slots;
	uint32_t cap;
	_Atomic uint32_t fresh;                  /* slots below this index have been used */
	pthread_mutex_t lock;                    /* guards the free list */
	struct idx_batch *free_head, *free_tail; /* free indices, in batches, oldest first */
	ht_stripe live[HT_STRIPES];
} handle_table;

int ht_init(handle_table *t, uint32_t cap);
void ht_fini(handle_table *t);
uint64_t ht_alloc(handle_table *t, void *ptr); /* 0 when full */
void ht_free(handle_table *t, uint64_t h);
void *ht_get(handle_table *t, uint64_t h);
uint64_t ht_live(handle_table *t); /* handles allocated and not freed (approximate) */
/* Like ht_get, and NULL unless the slot still holds handle h (generation check). */
void *ht_get_checked(handle_table *t, uint64_t h);

/* ------------------------------------------------------------------ scheduler */

typedef struct sched sched;

typedef struct cmd {
	struct cmd *next;
	void (*fn)(sched *s, void *arg);
	void *arg;
} cmd;

struct sched {
	int id;
	pthread_t thread;
	struct ev_loop *loop;
	ev_async wake;
	ebr_thread ebr;
	/* Local run queue: the owner's between turns; during one of the owner's
	 * turns a sleeping scheduler may take its movable processes (rescue, in
	 * sched.c), under lq_lock.  The counts are atomics so peers can read them. */
	rt_proc *lq_head, *lq_tail;
	_Atomic size_t lq_len;
	_Atomic size_t lq_movable; /* of which not pinned (candidates for sharing) */
	pthread_mutex_t lq_lock;
	/* Processes made runnable during a turn wait here (owner only) and join
	 * the local queue when the turn ends, so a turn never touches lq. */
	rt_proc *tq_head, *tq_tail;
	size_t tq_len, tq_movable;
	/* Odd while a process runs; +1 at every turn's start and end.  Peers
	 * read it to tell a turn that has lasted too long. */
	_Atomic uint64_t turn;
	bool in_turn;          /* owner's copy of turn's parity */
	_Atomic int steal_req; /* a peer holds lq_lock and may take from lq */
	/* While idle: looks for a peer stuck in a long turn (sched.c). */
	ev_timer rescue;
	uint64_t *seen_turn; /* per peer, at the previous rescue tick */
	/* Inject queue: processes made runnable by other threads. */
	pthread_mutex_t inject_lock;
	rt_proc *inj_head, *inj_tail;
	_Atomic size_t inj_len;
	size_t inj_movable; /* guarded by inject_lock */
	/* Processes made runnable here for other schedulers, handed over in one
	 * batch per target after the current turn (owner only). */
	struct pend {
		rt_proc *head, *tail;
		size_t n;
	} * pend;
	bool has_pend;
	/* Commands to run on this thread (timer cancels from elsewhere). */
	cmd *cmds;
	_Atomic int ncmds;
	_Atomic int sleeping;
	_Atomic int deep; /* sleeping without the rescue tick (sched.c idle) */
	bool woke;        /* back from idle and no turn run since (owner only) */
	/* The process being run and its crash recovery point. */
	rt_proc *current;
	bool yield_req; /* rt_yield: end current's turn after this message */
	jmp_buf crash_jb;
	uint64_t runs;
	uint64_t ref_counter;
};

typedef struct runtime {
	int nsched;
	int budget;
	sched *scheds;
	handle_table procs;
	handle_table timers;
	_Atomic bool stopping;
	_Atomic bool started;
	_Atomic int sleepers;
	_Atomic uint64_t global_epoch;
	_Atomic(ebr_thread *) ebr_threads;
	pthread_mutex_t ebr_lock;
	_Atomic uint64_t foreign_refs;
	_Atomic uint32_t rr; /* round robin for foreign spawns */
	bool membarrier;     /* private expedited membarrier registered (sched.c) */
} runtime;

/* The one runtime of this OS process.  Processes call rt_send/rt_self without
 * a context argument (as Erlang code does), so the runtime and the current
 * scheduler are found through this global and a thread-local pointer. */
extern runtime rt_g;
extern __thread sched *rt_cur;

void sched_make_runnable(rt_proc *p);
void sched_post(sched *s, void (*fn)(sched *, void *), void *arg);
uint64_t sched_new_ref(void);

/* proc.c */
rt_proc *proc_lookup(rt_pid pid);
void proc_run(sched *s, rt_proc *p);
void proc_crashed(sched *s, rt_proc *p);
void proc_free_final(rt_proc *p);
void proc_free_all(void);
void proc_after_handle(sched *s, rt_proc *p, int rc);
rt_pid proc_spawn_supervised(rt_pid sup, const rt_behaviour *b, const void *arg, size_t arg_size,
                             rt_msg *adopt);
rt_pid proc_spawn_supervised_on(rt_pid sup, const rt_behaviour *b, const void *arg, size_t arg_size,
                                rt_msg *adopt, int home);
rt_pid proc_spawn_linked_on(const rt_behaviour *b, const void *arg, size_t arg_size, int home);
void proc_add_link(rt_proc *p, rt_pid pid);
/* A kill timer of rt_shutdown_child reached p (timer.c): kill the pid if
 * the monitor is still held. */
void proc_kill_timer(rt_proc *p, const kill_req *k);
proc_ext *proc_ext_get(rt_proc *p);
void msg_free(rt_msg *m);
bool mbox_push(rt_proc *p, rt_msg *m);

/* timer.c / io.c / registry.c: per-process cleanup at exit. */
void timer_proc_exit(rt_proc *p);
void timer_deliver(rt_proc *p, rt_msg *m); /* handles SIG_TIMER */
void timer_msg_free(rt_msg *m);
void io_proc_exit(rt_proc *p);
void io_deliver(rt_proc *p, rt_msg *m);
void registry_proc_exit(rt_proc *p);
void registry_fini(void);

#endif /* runtime_internal_h */

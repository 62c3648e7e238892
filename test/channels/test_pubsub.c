/*
 * PubSub bookkeeping at scale: 20,000 subscribers of one topic, removed in
 * an order unrelated to insertion; subscribing twice updates, not duplicates.
 * (Delivery itself is covered by test_socket.c and the integration tests.)
 */
#include <stdlib.h>

#include "channels/internal.h"
#include "test/harness.h"

static rt_pid
fake_pid(uint32_t i)
{
	return ((uint64_t)1 << 32) | (i + 1); /* generation 1, slot i + 1 */
}

static void
test_many_subscribers_unsubscribe_in_any_order(void)
{
	ch_pubsub *ps = pubsub_new();
	enum { N = 20000 };
	for (uint32_t i = 0; i < N; i++)
		CHECK_EQ(pubsub_subscribe(ps, "room:big", fake_pid(i), fake_pid(N + i), 2, NULL),
		         0);
	CHECK_EQ(pubsub_count(ps, "room:big"), N);
	/* a second subscription of the same process updates it */
	CHECK_EQ(pubsub_subscribe(ps, "room:big", fake_pid(7), fake_pid(N + 7), 1, NULL), 0);
	CHECK_EQ(pubsub_count(ps, "room:big"), N);
	/* remove with a stride co-prime to N: every index once, scattered */
	int64_t t0 = test_now_ms();
	for (uint32_t k = 0, i = 0; k < N; k++, i = (i + 7919) % N) {
		CHECK_EQ(pubsub_unsubscribe(ps, "room:big", fake_pid(i)), 0);
		CHECK_EQ(pubsub_unsubscribe(ps, "room:big", fake_pid(i)), -1); /* already gone */
		CHECK_EQ(pubsub_count(ps, "room:big"), N - k - 1);
	}
	printf("    %d unsubscribes in %lld ms\n", N, (long long)(test_now_ms() - t0));
	CHECK_EQ(pubsub_count(ps, "room:big"), 0);
	CHECK_EQ(pubsub_unsubscribe(ps, "room:big", fake_pid(1)), -1);
	pubsub_free(ps);
}

static void
test_topics_are_independent(void)
{
	ch_pubsub *ps = pubsub_new();
	char topic[32];
	for (int t = 0; t < 1000; t++) {
		snprintf(topic, sizeof(topic), "room:%d", t);
		for (uint32_t i = 0; i < 3; i++)
			CHECK_EQ(pubsub_subscribe(ps, topic, fake_pid(i), 0, 2, NULL), 0);
	}
	for (int t = 0; t < 1000; t += 2) {
		snprintf(topic, sizeof(topic), "room:%d", t);
		CHECK_EQ(pubsub_unsubscribe(ps, topic, fake_pid(1)), 0);
	}
	for (int t = 0; t < 1000; t++) {
		snprintf(topic, sizeof(topic), "room:%d", t);
		CHECK_EQ(pubsub_count(ps, topic), t % 2 ? 3 : 2);
	}
	CHECK_EQ(pubsub_count(ps, "room:none"), 0);
	pubsub_free(ps);
}

TEST_LIST = {
    TEST(test_many_subscribers_unsubscribe_in_any_order),
    TEST(test_topics_are_independent),
    TEST_END,
};

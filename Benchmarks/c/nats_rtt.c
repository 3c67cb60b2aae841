/*
 * Request/reply round trip with plain nats.c, the reference for BusBench.
 *
 * One process, two connections to the same nats-server (like BusBench): a replier subscribed to
 * SUBJECT that publishes each request's payload back to its reply subject from nats.c's message
 * callback, and a requester that sends COUNT sequential requests with natsConnection_Request
 * (after WARMUP untimed ones). Both connections use natsOptions_SetSendAsap(true), as MeshBus does.
 *
 *   nats_rtt URL COUNT WARMUP PAYLOAD_BYTES [global]
 *
 * "global" turns on natsOptions_UseGlobalMessageDelivery, as MeshBus does. Prints one line:
 *   c count=N p50_us=X p99_us=Y mean_us=Z
 * Build: gcc -O2 -o nats_rtt nats_rtt.c $(pkg-config --cflags --libs libnats)
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *SUBJECT = "bench.c.echo";

static void
onRequest(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void) sub; (void) closure;
    if (natsMsg_GetReply(msg) != NULL)
        natsConnection_Publish(nc, natsMsg_GetReply(msg), natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
    natsMsg_Destroy(msg);
}

static int64_t
nowNanos(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

/* nearest-rank percentile, as BenchSupport.Samples computes it */
static int64_t
percentile(const int64_t *sorted, int n, double q)
{
    int rank = (int) (q * n + 0.999999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return sorted[rank - 1];
}

static natsStatus
connect(natsConnection **nc, const char *url, int global)
{
    natsOptions *opts = NULL;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK) s = natsOptions_SetURL(opts, url);
    if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);
    if (s == NATS_OK && global) s = natsOptions_UseGlobalMessageDelivery(opts, true);
    if (s == NATS_OK) s = natsConnection_Connect(nc, opts);
    natsOptions_Destroy(opts);
    return s;
}

int
main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s URL COUNT WARMUP PAYLOAD_BYTES [global]\n", argv[0]);
        return 2;
    }
    const char *url = argv[1];
    int count = atoi(argv[2]), warmup = atoi(argv[3]), size = atoi(argv[4]);
    int global = argc > 5 && strcmp(argv[5], "global") == 0;
    natsConnection *server = NULL, *client = NULL;
    natsSubscription *sub = NULL;
    natsStatus s = connect(&server, url, global);
    if (s == NATS_OK) s = natsConnection_Subscribe(&sub, server, SUBJECT, onRequest, NULL);
    if (s == NATS_OK) s = natsConnection_Flush(server);
    if (s == NATS_OK) s = connect(&client, url, global);
    if (s != NATS_OK) {
        fprintf(stderr, "nats_rtt: %s\n", natsStatus_GetText(s));
        return 1;
    }
    char *payload = malloc(size > 0 ? size : 1);
    memset(payload, 'x', size > 0 ? size : 1);
    int64_t *samples = malloc(sizeof(int64_t) * count);
    for (int i = 0; i < warmup + count; i++) {
        natsMsg *reply = NULL;
        int64_t t0 = nowNanos();
        s = natsConnection_Request(&reply, client, SUBJECT, payload, size, 5000);
        int64_t t1 = nowNanos();
        if (s != NATS_OK) {
            fprintf(stderr, "nats_rtt: request %d: %s\n", i, natsStatus_GetText(s));
            return 1;
        }
        natsMsg_Destroy(reply);
        if (i >= warmup) samples[i - warmup] = t1 - t0;
    }
    qsort(samples, count, sizeof(int64_t), cmp64);
    double sum = 0;
    for (int i = 0; i < count; i++) sum += samples[i];
    printf("c count=%d p50_us=%.1f p99_us=%.1f mean_us=%.1f\n", count,
           percentile(samples, count, 0.50) / 1000.0, percentile(samples, count, 0.99) / 1000.0, sum / count / 1000.0);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(client);
    natsConnection_Destroy(server);
    free(samples);
    free(payload);
    nats_Close();
    return 0;
}

/* nfqdelay: hold every packet of an NFQUEUE for a fixed delay, then accept it.
 *
 * A stand-in for `tc qdisc ... netem delay`, for kernels built without netem
 * (CONFIG_NET_SCH_NETEM unset). Every packet gets the same delay, so a FIFO of
 * (packet id, due time) is already in due order. Only packet metadata is copied
 * from the kernel (NFQNL_COPY_META), so the cost per packet is small.
 *
 *   nfqdelay QUEUE_NUM DELAY_MS      (run inside the namespace that queues)
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#define RING 262144u

static uint32_t ids[RING];
static int64_t due_ns[RING];
static uint32_t head, tail;
static int64_t delay_ns;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                     void *data) {
    (void)msg; (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (!ph) return 0;
    uint32_t id = ntohl(ph->packet_id);
    if (tail - head >= RING) {  /* full: let it through at once rather than drop */
        return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
    }
    ids[tail % RING] = id;
    due_ns[tail % RING] = now_ns() + delay_ns;
    tail++;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: nfqdelay QUEUE_NUM DELAY_MS\n");
        return 2;
    }
    int queue = atoi(argv[1]);
    delay_ns = (int64_t)(atof(argv[2]) * 1e6);
    struct nfq_handle *h = nfq_open();
    if (!h) { perror("nfq_open"); return 1; }
    struct nfq_q_handle *qh = nfq_create_queue(h, queue, &on_packet, NULL);
    if (!qh) { perror("nfq_create_queue"); return 1; }
    if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0) { perror("nfq_set_mode"); return 1; }
    nfq_set_queue_maxlen(qh, RING);
    nfnl_rcvbufsiz(nfq_nfnlh(h), 64 * 1024 * 1024);
    int fd = nfq_fd(h);
    char buf[65536] __attribute__((aligned));
    fprintf(stderr, "nfqdelay: queue %d, %.1f ms\n", queue, delay_ns / 1e6);
    for (;;) {
        int timeout = -1;
        if (head != tail) {
            int64_t wait = due_ns[head % RING] - now_ns();
            timeout = wait <= 0 ? 0 : (int)((wait + 999999) / 1000000);
        }
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, timeout) > 0) {
            for (;;) {
                ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
                if (n < 0) {
                    if (errno == ENOBUFS) { fprintf(stderr, "nfqdelay: ENOBUFS\n"); continue; }
                    break;
                }
                nfq_handle_packet(h, buf, (int)n);
            }
        }
        int64_t now = now_ns();
        while (head != tail && due_ns[head % RING] <= now) {
            nfq_set_verdict(qh, ids[head % RING], NF_ACCEPT, 0, NULL);
            head++;
        }
    }
}

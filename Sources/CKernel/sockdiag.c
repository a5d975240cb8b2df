#define _GNU_SOURCE
#include "CKernel.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>
#include <stdlib.h>
#include <termios.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>
#include <linux/tcp.h>

int tandem_enter_netns(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = setns(fd, CLONE_NEWNET);
    int saved = errno;
    close(fd);
    return rc < 0 ? -saved : 0;
}

int tandem_sock_diag_open(void) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -errno;
    int size = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    return fd;
}

static void fill(struct tandem_sock_info *info, const struct inet_diag_msg *m, int len) {
    memset(info, 0, sizeof(*info));
    info->family = m->idiag_family;
    info->state = m->idiag_state;
    info->sport = ntohs(m->id.idiag_sport);
    info->dport = ntohs(m->id.idiag_dport);
    info->uid = m->idiag_uid;
    info->inode = m->idiag_inode;
    size_t alen = m->idiag_family == AF_INET ? 4 : 16;
    memcpy(info->src, m->id.idiag_src, alen);
    memcpy(info->dst, m->id.idiag_dst, alen);

    const struct rtattr *a = (const struct rtattr *)(m + 1);
    int rem = len - (int)NLMSG_ALIGN(sizeof(*m));
    for (; RTA_OK(a, rem); a = RTA_NEXT(a, rem)) {
        if (a->rta_type != INET_DIAG_INFO) continue;
        // Older kernels send a shorter tcp_info: copy what came, the rest stays zero.
        struct tcp_info ti;
        memset(&ti, 0, sizeof(ti));
        size_t n = RTA_PAYLOAD(a);
        if (n > sizeof(ti)) n = sizeof(ti);
        memcpy(&ti, RTA_DATA(a), n);
        info->has_tcp_info = 1;
        info->app_limited = ti.tcpi_delivery_rate_app_limited;
        info->bytes_acked = ti.tcpi_bytes_acked;
        info->bytes_sent = ti.tcpi_bytes_sent;
        info->bytes_retrans = ti.tcpi_bytes_retrans;
        info->delivery_rate = ti.tcpi_delivery_rate;
        info->pacing_rate = ti.tcpi_pacing_rate;
        info->notsent_bytes = ti.tcpi_notsent_bytes;
        info->rtt_us = ti.tcpi_rtt;
        info->snd_cwnd = ti.tcpi_snd_cwnd;
        info->unacked = ti.tcpi_unacked;
    }
}

int tandem_sock_diag_dump(int fd, uint8_t family, uint8_t protocol, uint32_t states,
                          struct tandem_sock_info *out, int capacity, int *total) {
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
    } msg;
    memset(&msg, 0, sizeof(msg));
    msg.nlh.nlmsg_len = sizeof(msg);
    msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    static uint32_t seq = 1;
    msg.nlh.nlmsg_seq = __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);
    msg.req.sdiag_family = family;
    msg.req.sdiag_protocol = protocol;
    msg.req.idiag_states = states;
    if (protocol == IPPROTO_TCP) msg.req.idiag_ext = 1 << (INET_DIAG_INFO - 1);

    struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
    ssize_t sent;
    do {
        sent = sendto(fd, &msg, sizeof(msg), 0, (struct sockaddr *)&kernel, sizeof(kernel));
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) return -errno;

    static __thread char buf[65536];
    int filled = 0, seen = 0;
    for (;;) {
        ssize_t n;
        do { n = recv(fd, buf, sizeof(buf), 0); } while (n < 0 && errno == EINTR);
        if (n < 0) return -errno;
        if (n == 0) break;
        int len = (int)n;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_seq != msg.nlh.nlmsg_seq) continue;
            if (h->nlmsg_type == NLMSG_DONE) { *total = seen; return filled; }
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                return e->error < 0 ? e->error : -EPROTO;
            }
            if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
            seen++;
            if (filled < capacity) {
                fill(&out[filled], NLMSG_DATA(h), (int)h->nlmsg_len - NLMSG_HDRLEN);
                out[filled].protocol = protocol;
                filled++;
            }
        }
    }
    *total = seen;
    return filled;
}

int tandem_accept(int listener) {
    int fd;
    do { fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK); } while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

int tandem_open_pty(char *path, int path_len) {
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0) return -errno;
    if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, path, (size_t)path_len) != 0) {
        int e = errno; close(m); return -e;
    }
    struct termios t;
    if (tcgetattr(m, &t) == 0) { cfmakeraw(&t); tcsetattr(m, TCSANOW, &t); }
    fcntl(m, F_SETFL, fcntl(m, F_GETFL) | O_NONBLOCK);
    return m;
}

int tandem_epoll_create(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int tandem_epoll_add(int epfd, int fd, uint64_t token) {
    struct epoll_event e = { .events = EPOLLIN, .data.u64 = token };
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0 ? -errno : 0;
}

int tandem_epoll_remove(int epfd, int fd) {
    return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL) < 0 ? -errno : 0;
}

int tandem_epoll_wait(int epfd, uint64_t *tokens, int capacity, int timeout_ms) {
    struct epoll_event events[256];
    if (capacity > 256) capacity = 256;
    int n;
    do { n = epoll_wait(epfd, events, capacity, timeout_ms); } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) tokens[i] = events[i].data.u64;
    return n;
}

int tandem_name_thread(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    int r = pthread_setname_np(pthread_self(), buf);
    return r == 0 ? 0 : -r;
}

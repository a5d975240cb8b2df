// CKernel: small C helpers for what Swift cannot express against the kernel's own headers.
//
// The kernel's `struct tcp_info` (linux/tcp.h) and glibc's (netinet/tcp.h) differ and cannot
// be included together, and setns(2) needs _GNU_SOURCE: both live in this target's .c files,
// behind plain C types.
#ifndef TANDEM_CKERNEL_H
#define TANDEM_CKERNEL_H

#include <stdint.h>

/// Moves the calling thread into the network namespace at `path` (e.g. /run/netns/NAME).
/// Returns 0 or -errno. Only for a thread that was made for it: a thread's namespace
/// decides which namespace the sockets it creates belong to.
int tandem_enter_netns(const char *path);

/// One socket as NETLINK_SOCK_DIAG reports it. Addresses are in network order (IPv4 in
/// the first 4 bytes), ports in host order. TCP fields are zero for UDP sockets.
struct tandem_sock_info {
    uint8_t family;       // AF_INET or AF_INET6
    uint8_t protocol;     // IPPROTO_TCP or IPPROTO_UDP
    uint8_t state;        // TCP_ESTABLISHED etc.
    uint8_t has_tcp_info;
    uint8_t app_limited;  // tcpi_delivery_rate_app_limited
    uint8_t src[16];
    uint8_t dst[16];
    uint16_t sport;
    uint16_t dport;
    uint32_t uid;
    uint32_t inode;
    uint64_t bytes_acked;     // tcpi_bytes_acked
    uint64_t bytes_sent;      // tcpi_bytes_sent (includes retransmits)
    uint64_t bytes_retrans;   // tcpi_bytes_retrans
    uint64_t delivery_rate;   // tcpi_delivery_rate, bytes per second
    uint64_t pacing_rate;     // tcpi_pacing_rate, bytes per second
    uint32_t notsent_bytes;   // tcpi_notsent_bytes
    uint32_t rtt_us;          // tcpi_rtt
    uint32_t snd_cwnd;        // tcpi_snd_cwnd
    uint32_t unacked;         // tcpi_unacked
};

/// Opens a NETLINK_SOCK_DIAG socket in the calling thread's namespace. Returns fd or -errno.
int tandem_sock_diag_open(void);

/// Dumps the sockets of one family (AF_INET, AF_INET6) and protocol (IPPROTO_TCP,
/// IPPROTO_UDP) whose state is in the `states` bit mask (1 << TCP_ESTABLISHED, ...),
/// asking for tcp_info. Fills at most `capacity` entries; `*total` gets how many the
/// kernel reported. Returns the number filled, or -errno.
int tandem_sock_diag_dump(int fd, uint8_t family, uint8_t protocol, uint32_t states,
                          struct tandem_sock_info *out, int capacity, int *total);

/// accept4(2) with SOCK_CLOEXEC|SOCK_NONBLOCK; returns the fd or -errno.
int tandem_accept(int listener);

/// Opens a pseudo-terminal master (raw mode, non-blocking) and writes the slave's path
/// into `path`. Returns the master fd or -errno.
int tandem_open_pty(char *path, int path_len);

/// epoll(7) for Swift, which cannot import the packed `struct epoll_event`: `fd` added to
/// (or removed from) the set `epfd` with readable interest, keyed by `token`. 0 or -errno.
/// `tandem_epoll_create` makes a set (close-on-exec): its fd or -errno.
int tandem_epoll_create(void);
int tandem_epoll_add(int epfd, int fd, uint64_t token);
int tandem_epoll_remove(int epfd, int fd);

/// epoll_wait(2) into `tokens` (at most `capacity`); the count, or -errno (EINTR retried).
int tandem_epoll_wait(int epfd, uint64_t *tokens, int capacity, int timeout_ms);

/// Names the calling thread for the kernel (what `top -H`, `ps -L` and perf show): at most
/// 15 bytes are kept. 0 or -errno.
int tandem_name_thread(const char *name);

#endif

// CNetlink: libnl-3 and libnl-route-3 for Swift.
//
// Swift cannot import C macros with arguments (TC_HANDLE, TC_CAST, OBJ_CAST) nor call
// through them, so they become static inline functions here, prefixed `tandem_`. The
// error callback that captures the kernel's extended-ack message also lives here, because
// libnl 3.7 ignores NLMSGERR_ATTR_MSG.
#ifndef TANDEM_CNETLINK_SHIM_H
#define TANDEM_CNETLINK_SHIM_H

#include <errno.h>
#include <string.h>
#include <stdint.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/pkt_sched.h>
#include <linux/pkt_cls.h>
#include <linux/tc_act/tc_mirred.h>
#include <linux/if_ether.h>
#include <net/if.h>

#include <netlink/netlink.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/attr.h>
#include <netlink/socket.h>
#include <netlink/handlers.h>
#include <netlink/cache.h>
#include <netlink/object.h>
#include <netlink/route/link.h>
#include <netlink/route/tc.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/class.h>
#include <netlink/route/classifier.h>
#include <netlink/route/action.h>
#include <netlink/route/qdisc/htb.h>
#include <netlink/route/qdisc/tbf.h>
#include <netlink/route/cls/u32.h>
#include <netlink/route/act/mirred.h>
#include <netlink/genl/genl.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/family.h>
#include <linux/genetlink.h>
#include <linux/devlink.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

static inline uint32_t tandem_tc_handle(uint16_t major, uint16_t minor) { return TC_HANDLE(major, minor); }
static inline struct rtnl_tc *tandem_tc_cast(void *object) { return TC_CAST(object); }
static inline struct nl_object *tandem_obj_cast(void *object) { return OBJ_CAST(object); }

/// What the last failed request's NLMSG_ERROR said: the errno (positive) and the
/// kernel's extended-ack message, if it sent one. Owned by the Swift socket wrapper.
struct tandem_ack {
    int error;
    char message[256];
};

static inline int tandem_err_cb(struct sockaddr_nl *nla, struct nlmsgerr *err, void *arg) {
    (void)nla;
    struct tandem_ack *ack = (struct tandem_ack *)arg;
    ack->error = err->error < 0 ? -err->error : err->error;
    ack->message[0] = 0;
    struct nlmsghdr *hdr = (struct nlmsghdr *)((char *)err - NLMSG_HDRLEN);
    if (hdr->nlmsg_flags & NLM_F_ACK_TLVS) {
        size_t offset = sizeof(struct nlmsgerr);
        if (!(hdr->nlmsg_flags & NLM_F_CAPPED) && err->msg.nlmsg_len >= NLMSG_HDRLEN)
            offset += NLMSG_ALIGN(err->msg.nlmsg_len) - NLMSG_HDRLEN;
        char *start = (char *)err + offset;
        char *end = (char *)hdr + hdr->nlmsg_len;
        while (start + NLA_HDRLEN <= end) {
            struct nlattr *a = (struct nlattr *)start;
            if (a->nla_len < NLA_HDRLEN || start + a->nla_len > end) break;
            if ((a->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
                size_t n = a->nla_len - NLA_HDRLEN;
                if (n >= sizeof(ack->message)) n = sizeof(ack->message) - 1;
                memcpy(ack->message, start + NLA_HDRLEN, n);
                ack->message[n] = 0;
                size_t len = strlen(ack->message);
                while (len > 0 && (ack->message[len - 1] == '\n' || ack->message[len - 1] == ' ')) ack->message[--len] = 0;
            }
            start += NLA_ALIGN(a->nla_len);
        }
    }
    return NL_STOP;
}

/// Installs the extended-ack error callback on a socket and asks the kernel for
/// extended acks. Returns 0 or a negative libnl error.
static inline int tandem_install_ack(struct nl_sock *sk, struct tandem_ack *ack) {
    // The callback first: errnos are captured even where extended acks are not available.
    int rc = nl_socket_modify_err_cb(sk, NL_CB_CUSTOM, tandem_err_cb, ack);
    if (rc < 0) return rc;
    int one = 1;
    if (setsockopt(nl_socket_get_fd(sk), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one)) < 0) return -NLE_OPNOTSUPP;
    return 0;
}

/// A valid-message callback that hands each raw message to Swift.
typedef void (*tandem_raw_fn)(void *ctx, const void *data, uint32_t length);
struct tandem_raw_sink { tandem_raw_fn fn; void *ctx; };
static inline int tandem_raw_cb(struct nl_msg *msg, void *arg) {
    struct tandem_raw_sink *sink = (struct tandem_raw_sink *)arg;
    struct nlmsghdr *h = nlmsg_hdr(msg);
    sink->fn(sink->ctx, h, h->nlmsg_len);
    return NL_OK;
}
static inline int tandem_set_raw_sink(struct nl_sock *sk, struct tandem_raw_sink *sink) {
    return nl_socket_modify_cb(sk, NL_CB_VALID, NL_CB_CUSTOM, tandem_raw_cb, sink);
}
static inline int tandem_clear_raw_sink(struct nl_sock *sk) {
    return nl_socket_modify_cb(sk, NL_CB_VALID, NL_CB_DEFAULT, NULL, NULL);
}

/// Sends a message built elsewhere and waits for the kernel's ack. Frees the message.
static inline int tandem_send_sync(struct nl_sock *sk, struct nl_msg *msg) { return nl_send_sync(sk, msg); }

/// The raw bytes of a built message (for golden-byte tests).
static inline const void *tandem_msg_bytes(struct nl_msg *msg, uint32_t *length) {
    struct nlmsghdr *h = nlmsg_hdr(msg);
    *length = h->nlmsg_len;
    return h;
}

#endif

#ifndef CMNL_SHIM_H
#define CMNL_SHIM_H
// libmnl plus the kernel UAPI headers the WireGuard control library speaks.
// Function-like macros do not import into Swift, so the ones we need are
// re-exposed below as static inline helpers.
#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/genetlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/wireguard.h>
#include <net/if.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <unistd.h>
#include <sys/syscall.h>

static inline size_t cmnl_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }

// mnl_attr_for_each(attr, nlh, offset): first attribute after the fixed headers of a message.
static inline struct nlattr *cmnl_attr_first(const struct nlmsghdr *nlh, size_t offset) {
    return (struct nlattr *)mnl_nlmsg_get_payload_offset(nlh, offset);
}

// The loop condition of mnl_attr_for_each: the attribute lies wholly inside the message.
static inline bool cmnl_attr_ok_in_message(const struct nlmsghdr *nlh, const struct nlattr *attr) {
    return mnl_attr_ok(attr, (int)((const char *)mnl_nlmsg_get_payload_tail(nlh) - (const char *)attr));
}

// mnl_attr_for_each_nested(attr, nest): first attribute inside a nest.
static inline struct nlattr *cmnl_nested_first(const struct nlattr *nest) {
    return (struct nlattr *)mnl_attr_get_payload(nest);
}

// The loop condition of mnl_attr_for_each_nested.
static inline bool cmnl_nested_ok(const struct nlattr *nest, const struct nlattr *attr) {
    const char *end = (const char *)mnl_attr_get_payload(nest) + mnl_attr_get_payload_len(nest);
    return mnl_attr_ok(attr, (int)(end - (const char *)attr));
}

// mnl_nlmsg_for_each(nlh, buf, len) is expressed with mnl_nlmsg_ok/mnl_nlmsg_next, which are
// functions; this helper keeps the int length bookkeeping on the C side.
static inline const struct nlmsghdr *cmnl_nlmsg_next(const struct nlmsghdr *nlh, int *remaining) {
    return mnl_nlmsg_next(nlh, remaining);
}

// NLMSG_ALIGN / NLA_ALIGN as functions.
static inline size_t cmnl_nlmsg_align(size_t len) { return MNL_ALIGN(len); }
static inline size_t cmnl_nlmsg_header_size(void) { return MNL_NLMSG_HDRLEN; }
static inline size_t cmnl_attr_header_size(void) { return MNL_ATTR_HDRLEN; }

// NLA_F_NESTED is a macro with a cast the importer does not take.
static inline uint16_t cmnl_nla_f_nested(void) { return NLA_F_NESTED; }

// setns(2) is only declared with _GNU_SOURCE, which the Swift Glibc module is not built with.
// Used to open a netlink socket inside a named network namespace (the socket stays there).
static inline int cmnl_setns(int fd, int nstype) { return (int)syscall(SYS_setns, fd, nstype); }
static inline int cmnl_clone_newnet(void) { return 0x40000000; /* CLONE_NEWNET */ }
#endif

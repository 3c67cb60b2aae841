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

static inline size_t cmnl_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }
#endif

#!/usr/bin/env python3
"""Send one RTM_GETLINK (NLM_F_REQUEST, AF_UNSPEC, ifi_index=<ifindex>,
IFLA_EXT_MASK=<mask>) on a raw NETLINK_ROUTE socket and write the request
and the kernel's reply (first datagram, exactly as received) as lowercase hex.

usage: record-getlink.py IFINDEX MASK REQ_OUT.hex REPLY_OUT.hex
"""
import socket, struct, sys

NETLINK_ROUTE = 0
RTM_GETLINK = 18
NLM_F_REQUEST = 0x1
IFLA_EXT_MASK = 29
SEQ = 1

ifindex, mask = int(sys.argv[1]), int(sys.argv[2], 0)
attr = struct.pack("<HHI", 8, IFLA_EXT_MASK, mask)
ifinfo = struct.pack("<BBHiII", socket.AF_UNSPEC, 0, 0, ifindex, 0, 0)
body = ifinfo + attr
req = struct.pack("<IHHII", 16 + len(body), RTM_GETLINK, NLM_F_REQUEST, SEQ, 0) + body

s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
s.bind((0, 0))
s.sendto(req, (0, 0))
reply = s.recv(65536)
s.close()

open(sys.argv[3], "w").write(req.hex() + "\n")
open(sys.argv[4], "w").write(reply.hex() + "\n")
l, t, f, seq, pid = struct.unpack_from("<IHHII", reply)
print(f"reply: {len(reply)} bytes, nlmsg_len={l} type={t} flags={f:#x} seq={seq} pid={pid}")

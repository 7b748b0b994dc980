"""Template frames of the benchmark workloads, computed in numpy (bench/workloads.py).

What: a workload's packet is a template frame (per flow and kind: client bare, client data,
server bare, server data; seq = ack = flags = 0) with its sequence numbers and flags patched
in. :func:`templates` builds one frame of each kind for the first flow with
:mod:`ctaccel.packet.build` and keeps, per flow, the address words and ports;
:func:`template_rows` computes any rows' frames from them: the flow's addresses and ports
written in and both checksums updated (RFC 1624: the old words' ones' complements added,
then the new words), so ten million connections need neither a table of frames nor a Python
loop per flow. The bytes are those packet.build makes for each flow on its own (tested).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ctaccel.packet import build as B

ETH_HLEN, IPV4_HLEN, IPV6_HLEN, TCP_HLEN = 14, 20, 40, 20


def header_len(ipv6: bool) -> int:
    """Ethernet + IP + TCP header bytes (no options)."""
    return ETH_HLEN + (IPV6_HLEN if ipv6 else IPV4_HLEN) + TCP_HLEN


def fold_words(acc: np.ndarray) -> np.ndarray:
    """Ones'-complement fold of per-row sums of 16-bit words (below 2**32) into 16 bits."""
    acc = (acc & 0xFFFF) + (acc >> 16)
    return (acc & 0xFFFF) + (acc >> 16)


class Templates(NamedTuple):
    """What the template frame of any row is computed from (:func:`template_rows`): the four
    kinds of frame built once for flow 0 (client bare, client data, server bare, server data),
    and per flow the address words and ports patched into them. Rows are computed when a
    chunk needs them, so a workload of millions of connections holds no table of frames."""

    base: np.ndarray  # (4, frame_len) uint8: each kind's frame for flow 0
    base_ip: np.ndarray  # (4,) the IPv4 header checksum's ones'-complement sum (IPv6: 0)
    base_tcp: np.ndarray  # (4,) the TCP checksum's ones'-complement sum (seq = ack = 0)
    old: np.ndarray  # (4, words): flow 0's source, destination address words and ports
    client: np.ndarray  # (flows, 2 or 8) address words per flow
    server: np.ndarray
    back: np.ndarray  # the address servers answer (the client's, or the SNAT address)
    client_port: np.ndarray
    server_port: np.ndarray
    established: int
    ipv6: bool


def address_words(addrs, ipv6: bool) -> np.ndarray:
    """(n, 2) or, for IPv6, (n, 8) 16-bit words of addresses, most significant first."""
    if not ipv6:
        a = np.asarray(addrs, np.int64)
        return np.stack([a >> 16, a & 0xFFFF], axis=1)
    raw = b"".join(int(a).to_bytes(16, "big") for a in addrs)
    return np.frombuffer(raw, ">u2").reshape(-1, 8).astype(np.int64)


def templates(endpoints, established: int, frame_len: int, payload: bytes, ipv6: bool,
              macs, tcp_fields, reply_to=None) -> Templates:  # fmt: skip
    """Template frames (seq = ack = flags = 0, checksums correct for that): row 4f + k is kind
    k of established flow f, row 4 * established + u the SYN of unidirectional flow u.
    ``reply_to``: the address servers answer (the SNAT address), else each client's own."""
    client_ip, server_ip, client_port, server_port = endpoints[:4]
    client_mac, server_mac = macs
    c0, s0 = client_ip[0], server_ip[0]
    b0 = c0 if reply_to is None else reply_to
    cp0, sp0 = int(client_port[0]), int(server_port[0])
    kinds = ((client_mac, server_mac, c0, s0, cp0, sp0, b""),
             (client_mac, server_mac, c0, s0, cp0, sp0, payload),
             (server_mac, client_mac, s0, b0, sp0, cp0, b""),
             (server_mac, client_mac, s0, b0, sp0, cp0, payload))  # fmt: skip
    base = np.zeros((4, frame_len), np.uint8)
    old = []
    for k, (smac, dmac, src, dst, sport, dport, data) in enumerate(kinds):
        frame = B.tcp_frame(smac, dmac, src, dst, sport, dport, flags=0, seq=0, ack=0,
                            payload=data, seg=tcp_fields)  # fmt: skip
        base[k] = np.frombuffer(frame.ljust(frame_len, b"\x00"), np.uint8)  # Ethernet padding
        words = [address_words([src], ipv6)[0], address_words([dst], ipv6)[0], [sport, dport]]
        old.append(np.concatenate(words))
    tcp = header_len(ipv6) - TCP_HLEN
    stored_tcp = (base[:, tcp + 16].astype(np.int64) << 8) | base[:, tcp + 17]
    stored_ip = (base[:, ETH_HLEN + 10].astype(np.int64) << 8) | base[:, ETH_HLEN + 11]
    client = address_words(client_ip, ipv6)
    back = client if reply_to is None else np.broadcast_to(address_words([reply_to], ipv6),
                                                           client.shape)  # fmt: skip
    return Templates(base=base, base_ip=np.zeros(4, np.int64) if ipv6 else ~stored_ip & 0xFFFF,
                      base_tcp=~stored_tcp & 0xFFFF, old=np.array(old, np.int64),
                      client=client, server=address_words(server_ip, ipv6), back=back,
                      client_port=np.asarray(client_port, np.int64),
                      server_port=np.asarray(server_port, np.int64), established=established,
                      ipv6=ipv6)  # fmt: skip


def template_rows(tp: Templates, rows: np.ndarray):
    """The template frames of ``rows`` and their TCP checksums' ones'-complement sums: flow
    0's frame of the row's kind with the flow's addresses and ports written in and both
    checksums updated for them (RFC 1624: the old words' complements added, the new words)."""
    rows = np.asarray(rows, np.int64)
    e = tp.established
    flow = np.where(rows < 4 * e, rows // 4, rows - 3 * e)
    kind = np.where(rows < 4 * e, rows % 4, 0)
    from_client = kind < 2
    src = np.where(from_client[:, None], tp.client[flow], tp.server[flow])
    dst = np.where(from_client[:, None], tp.server[flow], tp.back[flow])
    sport = np.where(from_client, tp.client_port[flow], tp.server_port[flow])
    dport = np.where(from_client, tp.server_port[flow], tp.client_port[flow])
    new = np.concatenate([src, dst, sport[:, None], dport[:, None]], axis=1)
    old = tp.old[kind]
    n_addr = src.shape[1]
    frames = tp.base[kind]
    ip = ETH_HLEN + (8 if tp.ipv6 else 12)  # the source address; the destination follows
    addr = np.concatenate([src, dst], axis=1).astype(">u2").view(np.uint8)
    frames[:, ip : ip + 4 * n_addr] = addr.reshape(len(rows), -1)
    tcp = header_len(tp.ipv6) - TCP_HLEN
    frames[:, tcp : tcp + 4] = new[:, 2 * n_addr :].astype(">u2").view(np.uint8).reshape(-1, 4)
    delta = (0xFFFF - old).sum(axis=1) + new.sum(axis=1)
    tcp_sum = fold_words(fold_words(tp.base_tcp[kind] + delta))
    frames[:, tcp + 16 : tcp + 18] = (~tcp_sum & 0xFFFF).astype(">u2").view(np.uint8).reshape(-1, 2)
    if not tp.ipv6:
        d_ip = (0xFFFF - old[:, : 2 * n_addr]).sum(axis=1) + new[:, : 2 * n_addr].sum(axis=1)
        ip_sum = fold_words(fold_words(tp.base_ip[kind] + d_ip))
        ip_csum = (~ip_sum & 0xFFFF).astype(">u2").view(np.uint8).reshape(-1, 2)
        frames[:, ETH_HLEN + 10 : ETH_HLEN + 12] = ip_csum
    return frames, tcp_sum

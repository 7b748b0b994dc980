"""The TPACKET_V2 receive pass (io/rings.ring_plan, ring_take) on rings laid out here the
way the kernel lays them out: frames in order, VLAN tags put back, a slot whose frame came
whole through the socket's queue (TP_STATUS_COPY) taken from the recvmmsg messages in its
place, truncated frames counted, checksums left to offload completed, and the batch's room
respected. The live tests (tests/live) run the same code on real sockets."""

from __future__ import annotations

import struct

import numpy as np
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from ctaccel.io import rings as A
from ctaccel.io.afpacket import mmsg_buffers

FRAME, PER_BLOCK, BLOCK, SLOTS = 2048, 4, 8192, 8
GEOMETRY = np.array([FRAME, PER_BLOCK, BLOCK, SLOTS], np.int64)
MAC_AT = 76  # where the kernel puts the frame in a slot with a virtio header (90 - 14)


def frame(i: int, size: int = 0) -> bytes:
    p = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
         / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + i, dport=53)
         / Raw(bytes([i]) * size))  # fmt: skip
    return bytes(p)


def empty_ring():
    return np.zeros(BLOCK * (SLOTS // PER_BLOCK), np.uint8)


def put_slot(ring, k, data, status=A.TP_STATUS_USER, wire_len=None, vlan=None, vnet=b""):
    at = (k // PER_BLOCK) * BLOCK + (k % PER_BLOCK) * FRAME
    snap = min(len(data), FRAME - MAC_AT)
    tci, tpid = vlan if vlan else (0, 0)
    if vlan:
        status |= A.TP_STATUS_VLAN_VALID | A.TP_STATUS_VLAN_TPID_VALID
    hdr = struct.pack("<IIIHHIIHH", status, wire_len or len(data), snap, MAC_AT, MAC_AT + 14,
                      0, 0, tci, tpid)  # fmt: skip
    ring[at : at + len(hdr)] = np.frombuffer(hdr, np.uint8)
    v = (vnet or bytes(A.VNET_LEN)).ljust(A.VNET_LEN, b"\0")
    ring[at + MAC_AT - A.VNET_LEN : at + MAC_AT] = np.frombuffer(v, np.uint8)
    ring[at + MAC_AT : at + MAC_AT + snap] = np.frombuffer(data[:snap], np.uint8)
    return at


def batch(frames=64, room=1 << 20):
    return (np.zeros(room, np.uint8), np.zeros(frames, np.int64), np.zeros(frames, np.int64),
            np.zeros(frames, np.int64), np.zeros((frames, A.M_WIDTH), np.int64),
            np.zeros(2, np.int64))  # fmt: skip


def queued(frames: list[bytes]):
    """The recvmmsg buffers after reading ``frames`` from the socket's queue."""
    area, control, _iovecs, msgs = mmsg_buffers()
    for k, f in enumerate(frames):
        data = bytes(A.VNET_LEN) + f
        area[k * A.SLOT : k * A.SLOT + len(data)] = np.frombuffer(data, np.uint8)
        msgs[k, A.MM_LEN] = len(data)
        msgs[k, A.MM_CONTROLLEN] = 0
    return area, control, msgs, len(frames)


def taken(b) -> list[bytes]:
    buf, offsets, lengths, _in, _meta, count = b
    return [bytes(buf[offsets[i] : offsets[i] + lengths[i]]) for i in range(count[0])]


def status_of(ring, k) -> int:
    at = (k // PER_BLOCK) * BLOCK + (k % PER_BLOCK) * FRAME
    return int(ring[at : at + 4].view(np.uint32)[0])


def test_frames_come_in_slot_order_with_tags_back_and_slots_given_back():
    ring, state, b = empty_ring(), np.zeros(A.RS_WIDTH, np.int64), batch()
    plain, tagged = frame(1, 10), frame(2, 20)
    put_slot(ring, 0, plain)
    put_slot(ring, 1, tagged, vlan=(0x2005, 0x8100))
    slots, copies = A.ring_plan(ring, GEOMETRY, state, b, A.MSGS)
    assert (slots, copies) == (2, 0)
    got = A.ring_take(ring, GEOMETRY, state, b, 7, slots, queued([]))
    assert got == 2
    want_tagged = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                        / Dot1Q(vlan=5, prio=1) / Ether(tagged).payload)  # fmt: skip
    assert taken(b) == [plain, want_tagged]
    assert list(b[3][:2]) == [7, 7]
    assert status_of(ring, 0) == status_of(ring, 1) == A.TP_STATUS_KERNEL
    assert state[A.RS_BLOCK] == 2 and state[A.RS_FRAMES] == 2 and state[A.RS_VLAN] == 1
    # nothing more is ready: the next pass takes nothing
    assert A.ring_plan(ring, GEOMETRY, state, b, A.MSGS) == (0, 0)


def test_a_frame_too_big_for_its_slot_is_taken_from_the_queue_in_its_place():
    ring, state, b = empty_ring(), np.zeros(A.RS_WIDTH, np.int64), batch()
    big = frame(3, 5000)
    put_slot(ring, 0, frame(1))
    put_slot(ring, 1, big, status=A.TP_STATUS_USER | A.TP_STATUS_COPY, wire_len=len(big))
    put_slot(ring, 2, frame(2))
    slots, copies = A.ring_plan(ring, GEOMETRY, state, b, A.MSGS)
    assert (slots, copies) == (3, 1)
    A.ring_take(ring, GEOMETRY, state, b, 1, slots, queued([big]))
    assert taken(b) == [frame(1), big, frame(2)]


def test_with_no_queued_message_left_the_pass_stops_at_the_copy_slot():
    ring, state, b = empty_ring(), np.zeros(A.RS_WIDTH, np.int64), batch()
    big = frame(3, 5000)
    put_slot(ring, 0, frame(1))
    put_slot(ring, 1, big, status=A.TP_STATUS_USER | A.TP_STATUS_COPY, wire_len=len(big))
    A.ring_take(ring, GEOMETRY, state, b, 1, 2, queued([]))
    assert taken(b) == [frame(1)]
    assert state[A.RS_BLOCK] == 1 and status_of(ring, 1) & A.TP_STATUS_USER
    A.ring_take(ring, GEOMETRY, state, b, 1, 1, queued([big]))
    assert taken(b) == [frame(1), big]


def test_a_truncated_frame_the_kernel_could_not_queue_is_counted_and_dropped():
    ring, state, b = empty_ring(), np.zeros(A.RS_WIDTH, np.int64), batch()
    big = frame(4, 5000)
    put_slot(ring, 0, big, wire_len=len(big))  # no TP_STATUS_COPY: the queue was full
    put_slot(ring, 1, frame(5))
    slots, _ = A.ring_plan(ring, GEOMETRY, state, b, A.MSGS)
    A.ring_take(ring, GEOMETRY, state, b, 1, slots, queued([]))
    assert taken(b) == [frame(5)]
    assert state[A.RS_TRUNCATED] == 1 and status_of(ring, 0) == A.TP_STATUS_KERNEL


def test_the_plan_leaves_what_the_batch_has_no_room_for_and_wraps_around_the_ring():
    ring, state = empty_ring(), np.zeros(A.RS_WIDTH, np.int64)
    for k in range(SLOTS):
        put_slot(ring, k, frame(k, 100))
    b = batch(frames=3)
    slots, _ = A.ring_plan(ring, GEOMETRY, state, b, A.MSGS)
    assert slots == 3
    A.ring_take(ring, GEOMETRY, state, b, 1, slots, queued([]))
    b2 = batch(room=2 * (len(frame(0, 100)) + 4))  # bytes for two frames and their tags
    slots, _ = A.ring_plan(ring, GEOMETRY, state, b2, A.MSGS)
    assert slots == 2
    A.ring_take(ring, GEOMETRY, state, b2, 1, slots, queued([]))
    assert taken(b) + taken(b2) == [frame(k, 100) for k in range(5)]
    put_slot(ring, 0, frame(8, 100))  # the kernel wrapped around to slot 0
    b3 = batch()
    slots, _ = A.ring_plan(ring, GEOMETRY, state, b3, A.MSGS)
    A.ring_take(ring, GEOMETRY, state, b3, 1, slots, queued([]))
    assert taken(b3) == [frame(k, 100) for k in (5, 6, 7, 8)]
    assert state[A.RS_BLOCK] == 1


def test_a_checksum_left_to_offload_is_completed():
    ring, state, b = empty_ring(), np.zeros(A.RS_WIDTH, np.int64), batch()
    full = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2)
                 / Raw(b"payload"))  # fmt: skip
    # as the sending stack leaves it: the TCP checksum field holds the pseudo-header sum
    t = Ether(full)
    pseudo_only = bytearray(full)
    l4 = 14 + 20
    pseudo = IP(bytes(t[IP]))
    ph = struct.pack("!4s4sBBH", bytes(map(int, pseudo.src.split("."))),
                     bytes(map(int, pseudo.dst.split("."))), 0, 6, len(full) - l4)  # fmt: skip
    s = sum(struct.unpack("!6H", ph))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    pseudo_only[l4 + 16 : l4 + 18] = struct.pack("!H", s)
    vnet = struct.pack("<BBHHHH", A.VNET_NEEDS_CSUM, 0, 0, 0, l4, 16)
    put_slot(ring, 0, bytes(pseudo_only), vnet=vnet)
    slots, _ = A.ring_plan(ring, GEOMETRY, state, b, A.MSGS)
    A.ring_take(ring, GEOMETRY, state, b, 1, slots, queued([]))
    assert taken(b) == [full]
    assert state[A.RS_CSUM_DONE] == 1

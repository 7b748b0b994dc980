"""IP fragment reassembly in front of conntrack, as OVS 3.1's userspace datapath does it.

What: :class:`Ipf` holds IPv4/IPv6 fragments that reach a ``ct()`` action until their datagram
is complete, then hands the engine one reassembled packet to run through conntrack and the
original fragments to emit after it (they carry the reassembled packet's ct results). It keeps
OVS's named counters (``dpctl/ipf-get-status``) and its limits: minimum size of non-last
fragments, total fragments held, fragments per list, a 15 s list lifetime.

Design: plain Python; fragments are rare, so nothing here is on the hot path. Lists live in a
dict keyed like OVS's ``ipf_list_key`` (addresses, id, dl_type, zone, IPv4 protocol, recirc_id)
plus an insertion-ordered "expiry" dict (creation order == expiration order, the lifetime is
constant and time never goes back). Memory is bounded by ``max_frags`` held fragments.
Work per fragment is O(fragments in its list).

OVS runs ipf on a whole batch around conntrack (ipf_preprocess_conntrack /
ipf_postprocess_conntrack). Our engine works one packet at a time, i.e. batches of one: the
batch of a held fragment is empty after preprocessing, the batch of any other packet holds it
alone. Postprocessing also appends packets that belong to *other* datagrams (fragments left
over from a completed list beyond the 32-packet batch, and one expired list): those are the
``flushed`` packets below, and they appear in the batch of whatever packet went through ct.

Behaviour checked against the real OVS 3.1.0 (dummy ports, private instance, this machine):
- fragments are held; when the last missing one arrives every fragment is emitted, sorted by
  offset (not arrival order), all with the reassembled packet's ct_state (``new|trk``;
  ``est|rpl|trk`` for a reply datagram), and in the zone of that ct;
- a non-last fragment with IP total length < 1200 (IPv6: 40 + payload < 1280) is ``inv|trk``
  at once and counted ``too small``; a too-small *last* fragment is held normally;
- a duplicate or a fragment whose first or last byte falls inside a held fragment is
  ``inv|trk`` and counted ``overlapped``; a fragment that strictly *contains* a held one is
  accepted (OVS only tests the two end points), and then the list never completes;
- a fragment that arrives after its list completed starts a new list (held);
- IPv6: a hop-by-hop header before the fragment header is fine; an extension header *after*
  the fragment header in the first fragment makes the list never complete (OVS measures the
  first fragment's data from after those headers, so the offsets do not join up);
- more than 32 fragments: 32 leave with the completing packet, the rest with the next packet
  that goes through any ct() (after that packet), still with the datagram's ct_state;
- expiry: a list lives 15 s from its first fragment; the first ct() call after that (any
  packet, any zone) carries that list's fragments out after its own packet with ct_state
  ``inv`` *without* ``trk`` (observed zone: the zone of the ct that held them), one list per
  call; 10 s later a list that was not sent is purged silently;
- a fragment list survives recirculation: the fragments emitted by the first ct() reach a
  second ct() as new fragments (list key has another recirc_id/zone), are reassembled again
  there and all emerge from the second ct() with its results (observed: zone 5 then zone 6).

Invariants:
- ``nfrag`` == number of fragment frames held (in lists or waiting to be flushed);
  no fragment is both held and emitted; a list is in ``_lists`` iff in ``_expiry`` or
  ``_completed``.
- Results never raise on bad bytes: malformed fragments are ``invalid`` with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctaccel.conntrack.ipf_frames import (
    IP_MAX_SIZE,
    Frag,
    ipv4_fragment_info,
    ipv6_fragment_info,
    is_fragment,
    overlaps,
    reassemble,
    set_ipv4_checksum,
)
from ctaccel.errors import CtaccelError
from ctaccel.packet.key import DL_TYPE, ETH_TYPE_IP, ETH_TYPE_IPV6, L3_OFS

# --- OVS constants (lib/ipf.c) ---------------------------------------------------------------
V4_MIN_FRAG_SIZE_DEFAULT = 1200  # smallest IP total length of a non-last IPv4 fragment
V6_MIN_FRAG_SIZE_DEFAULT = 1280  # same for IPv6, header (40) + payload
MIN_FRAG_SIZE_LOWER_BOUND = 400  # dpctl/ipf-set-min-frag refuses less
MAX_FRAGS_DEFAULT = 1000  # fragments held at once, all lists together
MAX_FRAGS_UPPER_BOUND = 5000  # dpctl/ipf-set-max-nfrags refuses more
LIST_TIMEOUT_MS = 15_000  # a list expires 15 s after its first fragment
PURGE_DELAY_MS = 10_000  # an expired list not sent within 10 s more is dropped silently
BATCH_MAX = 32  # NETDEV_MAX_BURST: packets per batch, caps what one ct call can emit
EXPIRED_LISTS_PER_CALL = 1  # OVS sends (or purges) at most one expired list per ct call
V6_MAX_LIST_SIZE = 65535
IPV4_MAX_HDR = 60


# list states (ipf_list_state)
UNUSED, REASS_FAIL, OTHER_SEEN, FIRST_SEEN, LAST_SEEN, FIRST_LAST_SEEN, COMPLETED = range(7)

COUNTER_NAMES = tuple(
    f"ipf_{v}_frags_{what}"
    for v in ("v4", "v6")
    for what in ("accepted", "completed", "expired", "too_small", "overlapped", "purged")
) + (
    # Not in ipf-get-status; our names for the other ways a fragment ends up ``inv``.
    "ipf_l3csum_err",  # OVS coverage counter of the same name
    "ipf_bad_header",  # truncated / inconsistent IP header
    "ipf_disabled",  # reassembly off for this IP version: conntrack marks it invalid
    "ipf_nfrag_max",  # max_frags fragments already held
    "ipf_list_full",  # its list holds the most fragments a datagram can have
    "ipf_list_closed",  # its list already completed or failed to reassemble
    "ipf_reassembly_failed",  # datagram would exceed 65535 bytes (list then waits to expire)
)


@dataclass
class IpfResult:
    """What happened to one packet at a ct() action.

    kind:
      - ``not_fragment``: ipf ignores it; run conntrack on it as usual.
      - ``held``: stored; the packet leaves the pipeline (no drop counted, no output).
      - ``invalid``: conntrack is skipped; the packet continues with ``ct_state = inv|trk``,
        ``ct_zone = zone``, mark/label/orig-tuple 0 (OVS write_ct_md with no connection).
        ``reason`` names the counter.
      - ``complete``: run conntrack on ``reassembled`` (instead of the packet), then emit
        ``fragments`` (sorted by offset) carrying its ct results; see ``Ipf`` for the rules.
    ``flushed`` (any kind): packets of other datagrams that OVS appends after this one.
    """

    kind: str
    reason: str = ""
    reassembled: bytes | None = None
    fragments: list[bytes] = field(default_factory=list)
    flushed: list[FlushedFragment] = field(default_factory=list)
    # Set by the engine after running ct on ``reassembled``: the key's ct columns
    # (CT_STATE..CT_TP_DST). Fragments of this datagram flushed later carry them.
    ct_md: np.ndarray | None = None
    # Offsets the NAT copy-back needs (see Ipf.rewrite_fragments).
    _list: _FragList | None = field(default=None, repr=False)


@dataclass
class FlushedFragment:
    """A fragment OVS appends to the current ct call's output.

    ``expired`` True: its list timed out; it continues with ``ct_state = CS_INVALID`` only
    (no ``trk``), ``ct_zone = zone`` (the zone of the ct that held it), mark/label 0.
    ``expired`` False: left over from a completed datagram beyond the batch size; it carries
    ``result.ct_md`` of that datagram's reassembled packet.
    Either way it continues with the actions that follow the *current* ct() (the one whose
    call flushed it), after the current packet.
    """

    frame: bytes
    expired: bool
    zone: int
    result: IpfResult | None = None


@dataclass
class _FragList:
    key: tuple
    v6: bool
    zone: int
    expiration: int
    max_size: int
    frags: list[Frag] = field(default_factory=list)
    state: int = UNUSED
    sent: int = 0  # fragments already emitted (from the front of ``frags``)
    result: IpfResult | None = None


class Ipf:
    """Fragment reassembly state shared by every zone (OVS has one per datapath).

    Engine integration (what OVS's dpif-netdev + conntrack_execute do):

    1. A packet whose key says it is an IP fragment reaches ``ct(zone=Z, ...)``: call
       ``process(frame, key, Z, now_ms, recirc_id)``. Every other packet reaching a ct() must
       still let ipf flush: when ``now_ms >= ipf.next_flush_ms`` call
       ``ipf.flush(now_ms, batch_len=1, dl_type=...)`` after running conntrack on it.
    2. ``held``: the packet is consumed, nothing else happens to it.
    3. ``invalid``: skip conntrack; set ct_state inv|trk, ct_zone Z, mark/label/tuple 0; the
       packet continues with the actions after the ct (recirculates if ``table=``).
    4. ``complete``: parse ``reassembled`` (it is a whole, valid IP packet with the first
       fragment's Ethernet header and in_port) and run ct(Z, same arguments) on it with *no*
       cached connection (OVS's md.conn of the first fragment, normally NULL: fragments
       emitted by ipf never carry one). Store its ct columns in ``result.ct_md``. If NAT
       changed it, ``rewrite_fragments(result, reassembled_after_ct)`` gives the fragments to
       emit. The reassembled packet itself is discarded: it is never output, never
       recirculated, it hits no rule counters after the ct.
       Each of ``fragments`` then continues, in this order, as its own packet: its own key
       (parsed from its own frame; OpenFlow lookups see tp_src = tp_dst = 0 for *every*
       fragment, the first included: frag_handling "normal") with the ct columns of
       ``ct_md`` copied in, through the actions after this ct (the recirculation of
       ``ct(table=N)`` included). If a later ct() sees them, they are fragments again: call
       ``process`` for each; the list key differs (recirc_id/zone), they are held until
       the last one, and come out again together from that ct.
    5. ``flushed``: after the current packet (and after ``fragments``), each flushed
       fragment continues through the actions after the current ct() as its own packet.

    In OVS's conn-state sense ipf never creates or updates connections itself.
    """

    def __init__(
        self,
        enabled_v4: bool = True,
        enabled_v6: bool = True,
        min_frag_size_v4: int = V4_MIN_FRAG_SIZE_DEFAULT,
        min_frag_size_v6: int = V6_MIN_FRAG_SIZE_DEFAULT,
        max_frags: int = MAX_FRAGS_DEFAULT,
        timeout_ms: int = LIST_TIMEOUT_MS,
    ):
        if min_frag_size_v4 < MIN_FRAG_SIZE_LOWER_BOUND:
            raise CtaccelError(f"min_frag_size_v4 must be >= {MIN_FRAG_SIZE_LOWER_BOUND}")
        if min_frag_size_v6 < MIN_FRAG_SIZE_LOWER_BOUND:
            raise CtaccelError(f"min_frag_size_v6 must be >= {MIN_FRAG_SIZE_LOWER_BOUND}")
        if not 0 <= max_frags <= MAX_FRAGS_UPPER_BOUND:
            raise CtaccelError(f"max_frags must be in 0..{MAX_FRAGS_UPPER_BOUND}")
        self.enabled_v4 = enabled_v4
        self.enabled_v6 = enabled_v6
        self.min_frag_size_v4 = min_frag_size_v4
        self.min_frag_size_v6 = min_frag_size_v6
        self.max_frags = max_frags
        self.timeout_ms = timeout_ms
        # A datagram of 65535 bytes cut into the smallest allowed non-last fragments.
        self.max_v4_list_size = -(
            -(IP_MAX_SIZE - IPV4_MAX_HDR) // (min_frag_size_v4 - IPV4_MAX_HDR)
        )
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.nfrag = 0
        self._lists: dict[tuple, _FragList] = {}
        self._expiry: dict[tuple, _FragList] = {}  # creation order
        self._completed: dict[tuple, _FragList] = {}  # completed, fragments left to send

    # --- public ---------------------------------------------------------------------------
    @property
    def next_flush_ms(self) -> int:
        """Smallest ``now_ms`` at which ``flush`` has something to do (huge if never)."""
        if self._completed:
            return 0
        for lst in self._expiry.values():
            return lst.expiration + 1  # sent when now > expiration
        return 1 << 62

    def __len__(self) -> int:
        return len(self._lists)

    def process(
        self, frame: bytes, key: np.ndarray, zone: int, now_ms: int, recirc_id: int = 0
    ) -> IpfResult:
        """Run ipf's pre- and post-processing for one packet at a ct(zone) action."""
        self.expire(now_ms)
        result = self._preprocess(bytes(frame), key, zone, now_ms, recirc_id)
        # The packet's batch after conntrack: empty if it was consumed, else just it.
        batch_len = 1 if result.kind in ("not_fragment", "invalid") else 0
        dl_type = int(key[DL_TYPE])
        if result.kind == "complete":
            lst = result._list
            take = min(len(lst.frags), BATCH_MAX - batch_len)
            result.fragments = [f.frame for f in lst.frags[:take]]
            self._mark_sent(lst, take, dl_type, completed=True)
            batch_len += take
            if lst.sent < len(lst.frags):
                self._completed[lst.key] = lst
            else:
                self._drop_list(lst)
        result.flushed = self.flush(now_ms, batch_len, dl_type)
        return result

    def flush(self, now_ms: int, batch_len: int = 1, dl_type: int = ETH_TYPE_IP) -> list:
        """OVS's end of every conntrack call: fragments of other datagrams that join the batch.

        ``batch_len`` packets are already in the batch. First the leftovers of completed
        lists, then (at most one) expired list, inv without trk. ``dl_type`` is the batch's: OVS
        3.1.0 files the sent counters under it, whatever the lists' own IP version.
        """
        self.expire(now_ms)
        out: list[FlushedFragment] = []
        room = BATCH_MAX - batch_len
        for lst in list(self._completed.values()):
            take = min(room, len(lst.frags) - lst.sent)
            for f in lst.frags[lst.sent : lst.sent + take]:
                out.append(FlushedFragment(f.frame, False, lst.zone, lst.result))
            self._mark_sent(lst, take, dl_type, completed=True)
            room -= take
            if lst.sent < len(lst.frags):
                return out
            self._drop_list(lst)
        removed = 0
        for lst in list(self._expiry.values()):
            if now_ms <= lst.expiration or removed >= EXPIRED_LISTS_PER_CALL:
                break
            take = min(room, len(lst.frags) - lst.sent)
            for f in lst.frags[lst.sent : lst.sent + take]:
                out.append(FlushedFragment(f.frame, True, lst.zone))
            self._mark_sent(lst, take, dl_type, completed=False)
            room -= take
            if lst.sent < len(lst.frags):
                break
            self._drop_list(lst)
            removed += 1
        return out

    def expire(self, now_ms: int) -> int:
        """Purge lists 10 s past their expiration (OVS's clean thread). Returns frames purged.

        OVS's clean thread wakes every 60 s of wall time, so exactly when a stale list goes is
        not deterministic there; we purge at the first call at or after expiration + 10 s.
        """
        purged = 0
        for lists in (self._expiry, self._completed):
            for lst in list(lists.values()):
                if now_ms < lst.expiration + PURGE_DELAY_MS:
                    if lists is self._expiry:
                        break  # later lists expire later
                    continue
                n = len(lst.frags) - lst.sent
                self.nfrag -= n
                self.counters[f"ipf_{'v6' if lst.v6 else 'v4'}_frags_purged"] += n
                lst.sent = len(lst.frags)
                purged += n
                self._drop_list(lst)
        return purged

    def rewrite_fragments(self, result: IpfResult, reassembled_after_ct: bytes) -> list[bytes]:
        """The fragments as OVS emits them after ct changed the reassembled packet (NAT).

        OVS copies the reassembled packet's addresses into every fragment (fixing IPv4 header
        checksums) and its L4 bytes over the first fragment's L4 part.
        """
        lst = result._list
        after = bytes(reassembled_after_ct)
        first = lst.frags[0]
        l3 = first.l3_ofs
        out = []
        for i, f in enumerate(lst.frags[: len(result.fragments)]):
            b = bytearray(f.frame)
            if lst.v6:
                b[f.l3_ofs + 8 : f.l3_ofs + 40] = after[l3 + 8 : l3 + 40]
            else:
                b[f.l3_ofs + 12 : f.l3_ofs + 20] = after[l3 + 12 : l3 + 20]
                set_ipv4_checksum(b, f.l3_ofs)
            if i == 0:
                n = f.l3_end - f.l4_ofs
                src = f.l4_ofs - (8 if lst.v6 else 0)  # our IPv6 reassembly drops the frag hdr
                b[f.l4_ofs : f.l4_ofs + n] = after[src : src + n]
            out.append(bytes(b))
        return out

    def lists(self) -> list[str]:
        """dpctl/ipf-get-status -m style description of every list (for debugging)."""
        names = ("unused", "reassemble fail", "other frag", "first frag", "last frag")
        names += ("first/last frag", "complete")
        return [
            f"(key={lst.key},num_fragments={len(lst.frags)},state={names[lst.state]})"
            for lst in self._lists.values()
        ]

    # --- preprocessing ------------------------------------------------------------------------
    def _preprocess(self, frame, key, zone, now_ms, recirc_id) -> IpfResult:
        dl_type = int(key[DL_TYPE])
        l3 = int(key[L3_OFS])
        v6 = dl_type == ETH_TYPE_IPV6
        if not (self.enabled_v4 or self.enabled_v6):
            # OVS skips ipf entirely; conntrack cannot extract a key from a fragment.
            if is_fragment(frame, l3, v6):
                return self._invalid("ipf_disabled", v6)
            return IpfResult("not_fragment")
        if dl_type == ETH_TYPE_IP:
            info = ipv4_fragment_info(frame, l3, self.min_frag_size_v4)
        elif dl_type == ETH_TYPE_IPV6:
            info = ipv6_fragment_info(frame, l3, self.min_frag_size_v6)
        else:
            return IpfResult("not_fragment")
        if isinstance(info, str):
            if info == "not_fragment":
                return IpfResult("not_fragment")
            return self._invalid(info, v6)
        frag, first, last, list_key = info
        if not (self.enabled_v6 if v6 else self.enabled_v4):
            # OVS leaves it to conntrack, which cannot extract a key from a fragment.
            return self._invalid("ipf_disabled", v6)
        if self.nfrag >= self.max_frags:
            return self._invalid("ipf_nfrag_max", v6)
        list_key = (dl_type, zone, recirc_id) + list_key
        lst = self._lists.get(list_key)
        if lst is None:
            max_size = V6_MAX_LIST_SIZE if v6 else self.max_v4_list_size
            lst = _FragList(list_key, v6, zone, now_ms + self.timeout_ms, max_size)
            self._lists[list_key] = lst
            self._expiry[list_key] = lst
        elif lst.state in (REASS_FAIL, COMPLETED):
            return self._invalid("ipf_list_closed", v6)
        elif len(lst.frags) >= lst.max_size:
            return self._invalid("ipf_list_full", v6)
        if overlaps(lst.frags, frag.start, frag.end):
            self.counters[f"ipf_{'v6' if v6 else 'v4'}_frags_overlapped"] += 1
            return IpfResult("invalid", reason=f"ipf_{'v6' if v6 else 'v4'}_frags_overlapped")
        lst.frags.append(frag)
        self.nfrag += 1
        self.counters[f"ipf_{'v6' if v6 else 'v4'}_frags_accepted"] += 1
        return self._transition(lst, first, last)

    def _transition(self, lst: _FragList, first: bool, last: bool) -> IpfResult:
        state = lst.state
        if state in (UNUSED, OTHER_SEEN):
            state = FIRST_SEEN if first else LAST_SEEN if last else OTHER_SEEN
        elif state == FIRST_SEEN and last or state == LAST_SEEN and first:
            state = FIRST_LAST_SEEN
        lst.state = state
        if state != FIRST_LAST_SEEN:
            return IpfResult("held")
        lst.frags.sort(key=lambda f: f.start)  # stable, like OVS's insertion sort
        if any(a.end + 1 != b.start for a, b in zip(lst.frags, lst.frags[1:], strict=False)):
            return IpfResult("held")
        reassembled = reassemble(lst)
        if reassembled is None:
            lst.state = REASS_FAIL  # stays on the expiry list; its fragments leave as expired
            self.counters["ipf_reassembly_failed"] += 1
            return IpfResult("held")
        lst.state = COMPLETED
        del self._expiry[lst.key]
        lst.result = IpfResult("complete", reassembled=reassembled, _list=lst)
        return lst.result

    def _invalid(self, reason: str, v6: bool) -> IpfResult:
        if reason == "too_small":
            reason = f"ipf_{'v6' if v6 else 'v4'}_frags_too_small"
        self.counters[reason] += 1
        return IpfResult("invalid", reason=reason)

    def _mark_sent(self, lst: _FragList, n: int, dl_type: int, completed: bool) -> None:
        lst.sent += n
        self.nfrag -= n
        v = "v6" if dl_type == ETH_TYPE_IPV6 else "v4"
        self.counters[f"ipf_{v}_frags_{'completed' if completed else 'expired'}"] += n

    def _drop_list(self, lst: _FragList) -> None:
        self._lists.pop(lst.key, None)
        self._expiry.pop(lst.key, None)
        self._completed.pop(lst.key, None)

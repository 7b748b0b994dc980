"""The running datapath (`ctaccel run`): live interfaces as OpenFlow ports, forwarded through
the compiled engine, controlled while it runs.

What: :class:`LiveDatapath` owns the engine, the ports (io/afpacket.LivePort) and the control
socket (control.py), and :meth:`LiveDatapath.run` loops until it is stopped (SIGINT, SIGTERM,
``ctl stop``): wait for frames (poll with a timeout, or spin with ``busy_poll``), drain every
port's ring into one batch, run the engine on it, send each port's frames with one call,
sweep expired connections a part of the table at a time (every SWEEP_MS), answer control
requests, notice ports going down or up and (``--kernel-sync``) converge with the kernel's
conntrack table, all between batches.

Design:
- The clock is the monotonic clock in ms, one reading per batch (conntrack's timers and the
  sweeps run on it; it never goes back, so sweeps may skip their scan: Conntrack.sweep_some).
- A batch's outputs are gathered per port with whole-array operations (the same columns the
  replay writer reads); the reference engine's results (fragments) join through a third
  buffer. Frames for the controller have nowhere to go here: they are counted.
- Control requests are served between batches, so a rule change applies to whole batches:
  ``replace_flows`` swaps the rule set and drops every cache at once; no packet is processed
  under half of it. A request that fails (a bad rule file, an unknown command) gets an error
  reply; the datapath goes on.

Invariants: Python runs per batch and per port, never per packet; a port that goes down is
reported (and comes back when it is up again), not fatal.
"""

from __future__ import annotations

import select
import signal
import time

import numpy as np

from ctaccel.datapath import layout as L
from ctaccel.io import afpacket as A
from ctaccel.io import rings as R
from ctaccel.jit import njit
from ctaccel.ofproto.program import CONTROLLER_PORT

MAX_FRAMES = 16384  # per batch: more than one receive block can hold
PORTS = 1 << 16  # OpenFlow port numbers (the port map has one more cell: the controller's)
SWEEP_MS = 100  # a sweep step (at most 65,536 rows) this often: a 1M-row revolution in ~1.6 s
SYNC_MS = 50  # --kernel-sync: kernel events applied and our changes mirrored this often
IDLE_POLL_MS = 100


class LiveDatapath:
    """The engine between live ports; see the module docstring."""

    def __init__(self, engine, ports: list[tuple[int, str]], control=None, busy_poll=False,
                 log=None, rx: str = "ring"):  # fmt: skip
        self.engine = engine
        self.control = control
        self.ports: dict[int, A.LivePort] = {}
        try:
            for no, ifname in ports:
                self.ports[int(no)] = A.LivePort(ifname, int(no), rx)
        except BaseException:
            self.close()
            raise
        self.busy_poll = busy_poll
        self.kernel_zone_map: dict[int, int] = {}  # --zone-map: kernel zone -> ctaccel zone
        self.sync = None  # --kernel-sync: kernel_sync.KernelSync, ticked every SYNC_MS
        self.log = log or (lambda _msg: None)
        self.stopping = False
        self._path_counts = np.zeros(len(L.PATH_NAMES), np.int64)
        self.batches = 0
        # room for every port's whole ring and a full recvmmsg of super-frames at once
        cap_bytes = sum(p.batch_room() for p in self.ports.values()) + 4 * MAX_FRAMES
        self._batch = (np.zeros(cap_bytes, np.uint8), np.zeros(MAX_FRAMES, np.int64),
                       np.zeros(MAX_FRAMES, np.int64), np.zeros(MAX_FRAMES, np.int64),
                       np.zeros((MAX_FRAMES, R.M_WIDTH), np.int64),
                       np.zeros(2, np.int64))  # fmt: skip
        self._now = np.zeros(MAX_FRAMES, np.int64)
        self._empty = np.zeros(0, np.uint8)
        self._no_fofs = np.zeros(0, np.int64)
        self._no_slow = (self._no_fofs,) * 5
        self._up = {no: p.is_up() for no, p in self.ports.items()}
        for no, up in self._up.items():
            if not up:
                self.log(f"port {no} ({self.ports[no].ifname}) is down")
        self._tx = self._tx_structures()
        msgs = self._tx[0][2][2]
        self._msg_addr = [msgs.ctypes.data + k * msgs.strides[0] for k in range(msgs.shape[0])]
        self._tx[0][2][3][:, 0] = self._batch[0].ctypes.data
        warm_up_live()

    def _tx_structures(self):
        """tx_outputs' ``tx``: the port map, MTUs, one message area per port, counters (each
        port's transmit counters become a row of the shared array)."""
        slots = list(self.ports.values())
        portmap = np.full(PORTS + 1, -1, np.int64)
        state = np.zeros((len(slots), R.TS_WIDTH), np.int64)
        for slot, p in enumerate(slots):
            portmap[p.port_no + 1] = slot
            state[slot] = p.tx_state
            p.tx_state = state[slot]
        mtu = np.array([p.mtu for p in slots], np.int64)
        out = R.tx_buffers(len(slots), MAX_FRAMES)
        return (portmap, mtu, out, np.zeros(len(slots), np.int64), state,
                np.zeros(2, np.int64)), slots  # fmt: skip

    @staticmethod
    def clock_ms() -> int:
        return time.monotonic_ns() // 1_000_000

    def run(self) -> None:
        """Forward until stopped."""
        poller = select.poll()
        for p in self.ports.values():
            poller.register(p.rx.fileno(), select.POLLIN)
        if self.control is not None:
            self.control.register(poller)
        last_sweep = last_check = last_sync = self.clock_ms()
        # with --kernel-sync the loop wakes every SYNC_MS even when idle: the kernel's events
        # wait in their socket until then (its fd is not polled: that would spin meanwhile)
        idle = min(IDLE_POLL_MS, SYNC_MS) if self.sync is not None else IDLE_POLL_MS
        timeout = 0 if self.busy_poll else idle
        previous = [signal.signal(s, self._stop) for s in (signal.SIGINT, signal.SIGTERM)]
        try:
            while not self.stopping:
                events = poller.poll(timeout)
                if self._forward_batch():
                    timeout = 0  # more may be waiting: look again before sleeping
                else:
                    timeout = 0 if self.busy_poll else idle
                now = self.clock_ms()
                if now - last_sweep >= SWEEP_MS:
                    self.engine.conntrack.sweep_some(now)
                    last_sweep = now
                if now - last_check >= 1000:
                    self._check_ports()
                    last_check = now
                if self.sync is not None and now - last_sync >= SYNC_MS:
                    self.sync.tick(now)
                    last_sync = now
                if self.control is not None and events:
                    self.control.serve(events, self)
        finally:
            for s, h in zip((signal.SIGINT, signal.SIGTERM), previous, strict=True):
                signal.signal(s, h)

    def _stop(self, *_args) -> None:
        self.stopping = True

    def _forward_batch(self) -> int:
        """Drain every port into one batch, run it, send the outputs; the frames handled."""
        buf, offsets, lengths, in_ports, meta, count = self._batch
        count[:] = 0
        for p in self.ports.values():
            p.receive(self._batch)
        n = int(count[0])
        if not n:
            return 0
        now = self._now[:n]
        now.fill(self.clock_ms())
        br = self.engine.run(buf, offsets[:n], lengths[:n], in_ports[:n], now)
        self._send(br, n)
        self.batches += 1
        self._path_counts += np.bincount(br.res[:, L.R_PATH], minlength=len(L.PATH_NAMES))
        return n

    def _send(self, br, n: int) -> None:
        """Every output of the batch to its port, in packet order, one sendmmsg per port, the
        messages built by tx_outputs (the reference engine's outputs, for packets it
        processed, from their own buffer)."""
        buf, offsets, lengths, _in_ports, meta, _count = self._batch
        tx, slots = self._tx
        fofs = br.out_fofs if br.out_fofs is not None else self._no_fofs
        flens = br.out_flen if br.out_flen is not None else self._no_fofs
        fbuf = br.out_fbuf if br.out_fbuf is not None else self._empty
        slow, extra = self._no_slow, self._empty
        if br.slow:
            *slow, extra = br.slow_outputs()
        addr = tx[2][3]  # the batch buffer's address is set once
        addr[:, 1] = fbuf.ctypes.data if len(fbuf) else 0
        addr[:, 2] = extra.ctypes.data if len(extra) else 0
        tx_outputs(br.res, (br.out_ports, fofs, flens), tuple(slow),
                   ((buf, fbuf, extra), offsets, lengths), meta, tx)  # fmt: skip
        counts = tx[3]
        for slot, p in enumerate(slots):
            if counts[slot]:
                p.send_messages(self._msg_addr[slot], int(counts[slot]))

    def _check_ports(self) -> None:
        for no, p in self.ports.items():
            up = p.is_up()
            if up != self._up[no]:
                self.log(f"port {no} ({p.ifname}) is {'up' if up else 'down'}")
                self._up[no] = up

    def stats(self) -> dict:
        """Per port counters, per path counts, the datapath's counters and cache sizes."""
        return {"ports": {f"{no} ({p.ifname})": p.counters() for no, p in self.ports.items()},
                "paths": {L.PATH_NAMES[c]: int(k) for c, k in enumerate(self._path_counts) if k},
                "batches": self.batches,
                "to_controller": int(self._tx[0][5][0]),
                "tx_no_such_port": int(self._tx[0][5][1]),
                "datapath": dict(self.engine.stats),
                "conntrack": {"connections": len(self.engine.conntrack),
                              **self.engine.conntrack.counters},
                **({"kernel_sync": dict(self.sync.counts)} if self.sync is not None else {})}  # fmt: skip

    def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
        for p in self.ports.values():
            p.close()
        if self.control is not None:
            self.control.close()


@njit
def tx_outputs(res, outs, slow, frames, meta, tx):
    """Every output of the batch's packets into its port's sendmmsg messages, in packet
    order: ``outs`` = (out_ports, out_fofs, out_flen: empty when nothing was rewritten); ``slow`` =
    BatchResult.slow_outputs' arrays (first, count, port, offset, length; all empty when the
    reference engine processed no packet), whose frames are the third buffer; ``frames`` =
    (the three buffers, offsets, lengths); ``tx`` = (portmap: port + 1 -> slot or -1, the
    ports' MTUs, the messages (afpacket.put_message's ``out``), messages per slot, per-slot
    counters (afpacket TS_*), [frames to the controller, frames to no port])."""
    out_ports, out_fofs, out_flen = outs
    s_first, s_count, s_port, s_off, s_len = slow
    bufs, offsets, lengths = frames
    portmap, mtu, out, counts, state, misc = tx
    rewritable = out_fofs.shape[0] > 0
    capacity = out[2].shape[1]
    counts[:] = 0
    for i in range(res.shape[0]):
        from_slow = s_first.shape[0] > 0 and s_count[i] >= 0
        for k in range(s_count[i] if from_slow else res[i, L.R_NOUT]):
            if from_slow:
                j = s_first[i] + k
                p, which, off, length = s_port[j], 2, s_off[j], s_len[j]
            else:
                idx = res[i, L.R_OUT_START] + k
                p, which, off, length = out_ports[idx], 0, offsets[i], lengths[i]
                if res[i, L.R_REWRITTEN] != 0 and rewritable and out_fofs[idx] >= 0:
                    which, off, length = 1, out_fofs[idx], out_flen[idx]
            slot = portmap[p + 1] if 0 <= p + 1 < portmap.shape[0] else -1
            if slot < 0:
                misc[0 if p == CONTROLLER_PORT else 1] += 1
                continue
            if (length > mtu[slot] + 18 and meta[i, R.M_GSO_TYPE] == R.GSO_NONE) or (
                    counts[slot] >= capacity):  # fmt: skip
                state[slot, R.TS_TOO_BIG] += 1
                continue
            R.put_message(out, slot, counts[slot], bufs[which], which, off, length,
                          meta[i, R.M_GSO_TYPE], meta[i, R.M_GSO_SIZE])  # fmt: skip
            counts[slot] += 1
            state[slot, R.TS_BYTES] += length


def warm_up_live() -> None:
    """Compile (first run) or load the ports' kernels with the types the loop gives them, so
    that the first packets do not wait for them: an empty ring drained, no frame sent."""
    ring = np.zeros(A.LivePort.BLOCK_SIZE, np.uint8)  # every block the kernel's: nothing to read
    batch = (
        np.zeros(64, np.uint8),
        np.zeros(4, np.int64),
        np.zeros(4, np.int64),
        np.zeros(4, np.int64),
        np.zeros((4, R.M_WIDTH), np.int64),
        np.zeros(2, np.int64),
    )
    state = np.zeros(R.RS_WIDTH, np.int64)
    R.rx_drain(ring, np.array([len(ring), 1], np.int64), state, batch, 1)
    area, control, _iovecs, msgs = A.mmsg_buffers()
    R.mmsg_take(area, control, msgs, 0, batch, state, 1)
    slots = np.zeros(2048, np.uint8)  # one slot, the kernel's
    geometry = np.array([2048, 1, 2048, 1], np.int64)
    plan = R.ring_plan(slots, geometry, state, batch, R.MSGS)
    R.ring_take(slots, geometry, state, batch, 1, plan[0], (area, control, msgs, 0))
    z, u = np.zeros(0, np.int64), np.zeros(0, np.uint8)
    tx = (
        np.full(PORTS + 1, -1, np.int64),
        z,
        R.tx_buffers(1, 1),
        np.zeros(1, np.int64),
        np.zeros((1, R.TS_WIDTH), np.int64),
        np.zeros(2, np.int64),
    )
    tx_outputs(np.zeros((0, L.RES_WIDTH), np.int64), (z, z, z), (z, z, z, z, z), ((u, u, u), z, z),
               np.zeros((0, R.M_WIDTH), np.int64), tx)  # fmt: skip

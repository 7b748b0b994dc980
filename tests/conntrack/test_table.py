"""The conn table: hash index + slot allocator against a plain dict, growth, jit vs Python."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ctaccel.conntrack import table as T
from ctaccel.conntrack.layout import C_EXT, C_GENERATION, C_USED, ROW_CONN, ROW_EXT


def mixed_tuple(n: int) -> np.ndarray:
    """make_tuple's, IPv6 for every third n (its connection needs an extension row)."""
    tup = make_tuple(n)
    if n % 3 == 0:
        tup[T.T_DL_TYPE] = 0x86DD
        tup[T.T_SRC] = 0x20010DB8
        tup[T.T_DST] = 0x20010DB8
    return tup


def make_tuple(n: int, proto: int = 17, zone: int = 0) -> np.ndarray:
    """A distinct IPv4 UDP tuple per n (n < 2**16) whose reverse is distinct too."""
    tup = np.zeros(T.TUP_WIDTH, np.int64)
    tup[T.T_ZONE] = zone
    tup[T.T_DL_TYPE] = 0x0800
    tup[T.T_PROTO] = proto
    tup[T.T_SRC + 3] = 0x0A000000 + n
    tup[T.T_DST + 3] = 0x0B000000 + n
    tup[T.T_SWORD] = 1000 + n
    tup[T.T_DWORD] = 80
    return tup


def reversed_tuple(tup):
    r = tup.copy()
    r[T.T_SRC : T.T_SRC + 4], r[T.T_DST : T.T_DST + 4] = (
        tup[T.T_DST : T.T_DST + 4],
        tup[T.T_SRC : T.T_SRC + 4].copy(),
    )
    r[T.T_SWORD], r[T.T_DWORD] = tup[T.T_DWORD], tup[T.T_SWORD]
    return r


def lookup(tables, tup):
    conns, index, _free, _stats = tables
    return int(T.index_lookup(conns, index, tup, T.conn_hash(tup)))


def test_insert_finds_both_directions_and_release_forgets():
    tables = T.new_tables(8, 100)
    conns, index, free, stats = tables
    tup = make_tuple(1)
    slot = int(T.conn_alloc(conns, index, free, stats, tup, 0))
    assert slot >= 0 and stats[T.ST_N_CONNS] == 1
    assert lookup(tables, tup) == slot * 2
    assert lookup(tables, reversed_tuple(tup)) == slot * 2 + 1
    other = make_tuple(2)
    assert lookup(tables, other) == -1
    gen = conns[slot, C_GENERATION]
    T.conn_release(conns, index, free, stats, slot)
    assert conns[slot, C_USED] == 0 and conns[slot, C_GENERATION] == gen + 1
    assert lookup(tables, tup) == -1 and lookup(tables, reversed_tuple(tup)) == -1
    assert stats[T.ST_N_CONNS] == 0 and stats[T.ST_FREE_TOP] == 8
    assert not index.any()


def test_full_table_refuses_allocation():
    conns, index, free, stats = T.new_tables(2, 100)
    assert T.conn_alloc(conns, index, free, stats, make_tuple(1), 0) >= 0
    assert T.conn_alloc(conns, index, free, stats, make_tuple(2), 0) >= 0
    assert T.conn_alloc(conns, index, free, stats, make_tuple(3), 0) == -1


def test_icmp_tuples_distinguish_type_direction():
    conns, index, free, stats = T.new_tables(4, 100)
    tup = np.zeros(T.TUP_WIDTH, np.int64)
    tup[T.T_DL_TYPE] = 0x0800
    tup[T.T_PROTO] = 1
    tup[T.T_SRC + 3] = 1
    tup[T.T_DST + 3] = 2
    tup[T.T_SWORD] = (77 << 16) | (8 << 8)  # echo request id 77
    tup[T.T_DWORD] = (77 << 16) | (0 << 8)
    slot = int(T.conn_alloc(conns, index, free, stats, tup, 0))
    reply = reversed_tuple(tup)
    assert lookup((conns, index, free, stats), reply) == slot * 2 + 1
    # a second *request* from the other side is not the reply
    wrong = reply.copy()
    wrong[T.T_SWORD] = (77 << 16) | (8 << 8)
    wrong[T.T_DWORD] = (77 << 16) | (0 << 8)
    assert lookup((conns, index, free, stats), wrong) == -1


def test_self_connection_reports_original_direction():
    conns, index, free, stats = T.new_tables(4, 100)
    tup = make_tuple(5)
    tup[T.T_DST + 3] = tup[T.T_SRC + 3]
    tup[T.T_DWORD] = tup[T.T_SWORD]
    slot = int(T.conn_alloc(conns, index, free, stats, tup, 0))
    assert lookup((conns, index, free, stats), tup) == slot * 2


def test_backward_shift_keeps_colliding_entries_reachable():
    # a tiny index where everything collides in a few buckets
    conns, index, free, stats = T.new_tables(16, 100)
    small = np.zeros(64, np.int64)
    tuples = [make_tuple(i) for i in range(16)]
    slots = [int(T.conn_alloc(conns, small, free, stats, t, 0)) for t in tuples]
    rng = np.random.default_rng(1)
    alive = set(range(16))
    for i in rng.permutation(16)[:10]:
        T.conn_release(conns, small, free, stats, slots[i])
        alive.discard(int(i))
        for j in range(16):
            expect = slots[j] * 2 if j in alive else -1
            assert T.index_lookup(conns, small, tuples[j], T.conn_hash(tuples[j])) == expect
    assert np.count_nonzero(small) == len(alive)  # one entry per IPv4 UDP connection


class Reference:
    """The behaviour the table must have, as a dict."""

    def __init__(self):
        self.by_tuple: dict[bytes, int] = {}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["ins", "del", "get", "grow"]), st.integers(0, 40)), max_size=120
    )
)
def test_random_operations_match_a_dict(ops):
    """Every third tuple is IPv6: its connection takes an extension row (layout.py) too."""
    conns, index, free, stats = T.new_tables(4, 1000)
    ref: dict[int, int] = {}  # tuple number -> slot
    for op, n in ops:
        tup = mixed_tuple(n)
        if op == "ins" and n not in ref:
            if stats[T.ST_FREE_TOP] < 2:
                conns, index, free = T.grow_tables(conns, index, free, stats, conns.shape[0] * 2)
            slot = int(T.conn_alloc(conns, index, free, stats, tup, 0))
            assert slot >= 0 and slot not in ref.values()
            ref[n] = slot
        elif op == "del" and n in ref:
            T.conn_release(conns, index, free, stats, ref.pop(n))
        elif op == "grow":
            conns, index, free = T.grow_tables(conns, index, free, stats, conns.shape[0] + 3)
        for m in set(ref) | {n}:
            t = mixed_tuple(m)
            expect = ref[m] * 2 if m in ref else -1
            assert T.index_lookup(conns, index, t, T.conn_hash(t)) == expect
            r = reversed_tuple(t)
            assert T.index_lookup(conns, index, r, T.conn_hash(r)) == (
                expect + 1 if expect >= 0 else -1
            )
        assert stats[T.ST_N_CONNS] == len(ref) == int((conns[:, C_USED] == ROW_CONN).sum())
        ext = {int(conns[s, C_EXT]) - 1 for s in ref.values() if conns[s, C_EXT]}
        assert len(ext) == sum(m % 3 == 0 for m in ref)  # one per IPv6 connection
        assert ext == set(np.flatnonzero(conns[:, C_USED] == ROW_EXT).tolist())
        assert stats[T.ST_FREE_TOP] == conns.shape[0] - len(ref) - len(ext)
        # one entry per connection, two for one with an extension row
        assert np.count_nonzero(index) == len(ref) + len(ext)
        in_use = set(ref.values()) | ext
        assert set(free[: stats[T.ST_FREE_TOP]].tolist()) == set(range(conns.shape[0])) - in_use


def test_index_is_sized_for_load_half():
    for cap in (1, 3, 1000, 1 << 14):
        n = T.index_buckets_for(cap)
        assert n & (n - 1) == 0 and n >= 2 * cap


def _churn(alloc, release, lookup_fn, hash_fn):
    conns, index, free, stats = T.new_tables(32, 1000)
    rng = np.random.default_rng(7)
    live = {}
    found = []
    for _ in range(300):
        n = int(rng.integers(0, 50))
        tup = make_tuple(n)
        if n in live:
            release(conns, index, free, stats, live.pop(n))
        elif stats[T.ST_FREE_TOP] > 0:
            live[n] = int(alloc(conns, index, free, stats, tup, 0))
        found.append(int(lookup_fn(conns, index, tup, hash_fn(tup))))
    return conns, index, free, stats, found


def test_jitted_kernels_match_plain_python():
    jit = _churn(T.conn_alloc, T.conn_release, T.index_lookup, T.conn_hash)
    py = _churn(
        T.conn_alloc.py_func, T.conn_release.py_func, T.index_lookup.py_func, T.conn_hash.py_func
    )
    for a, b in zip(jit[:4], py[:4], strict=True):
        np.testing.assert_array_equal(a, b)
    assert jit[4] == py[4]


def test_tables_start_on_a_cache_line_and_are_zeroed():
    """A connection row's hot columns (256 bytes) must sit on 4 cache lines, not 5."""
    from ctaccel.arrays import aligned_zeros

    conns, index, free, stats = T.new_tables(100, 1000)
    assert conns.ctypes.data % 64 == 0 and conns.flags.c_contiguous and conns.flags.writeable
    for shape, dtype in (((3, 5), np.int64), (7, np.uint8), ((2, 2, 3), np.int32)):
        a = aligned_zeros(shape, dtype, prefault=True)
        assert a.ctypes.data % 64 == 0 and a.dtype == dtype and not a.any()
        assert a.shape == (shape if isinstance(shape, tuple) else (shape,))


def test_growth_in_a_row_store_moves_no_row_and_frees_as_a_rebuild_would():
    """A table grown within its row store keeps every row where it was (a longer view, no
    copy), finds every connection through the new index, and hands out rows in the order a
    full rebuild (rebuild_index) would."""
    rows = T.row_store(1000, 8)
    conns, index, free, stats = T.new_tables(8, 1000, rows)
    slots = {n: int(T.conn_alloc(conns, index, free, stats, make_tuple(n), 0)) for n in range(8)}
    for n in (2, 5):  # two free rows below the new ones
        T.conn_release(conns, index, free, stats, slots.pop(n))
    first = conns.ctypes.data
    conns, index, free = T.grow_tables(conns, index, free, stats, 32, rows)
    assert conns.ctypes.data == first and conns.shape[0] == 32
    assert np.may_share_memory(conns, rows)
    for n, slot in slots.items():
        t = make_tuple(n)
        assert T.index_lookup(conns, index, t, T.conn_hash(t)) == slot * 2
    rebuilt_index, rebuilt_free = np.zeros_like(index), np.zeros_like(free)
    rebuilt_stats = stats.copy()
    T.rebuild_index(conns, rebuilt_index, rebuilt_free, rebuilt_stats)
    top = int(stats[T.ST_FREE_TOP])
    assert top == int(rebuilt_stats[T.ST_FREE_TOP]) == 32 - len(slots)
    assert free[:top].tolist() == rebuilt_free[:top].tolist()
    assert int(T.conn_alloc(conns, index, free, stats, make_tuple(40), 0)) == 2  # lowest first

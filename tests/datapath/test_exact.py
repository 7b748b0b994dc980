"""ExactIndex (datapath/exact.py) against a dict, and its compiled kernels against their source.

The index keeps no keys: each entry's key lies in the entry's own row (from ``key_at``), as
the fast path's entries carry theirs. The tests keep such rows in :class:`Entries`.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ctaccel.datapath.exact import (
    ES_LIMIT,
    ExactIndex,
    em_hash31,
    em_take_next,
    hash_row,
    python_source,
    slots_for,
)
from ctaccel.hashtable import M32

WIDTH = 3
KEY_AT = 2  # each row: two words of its own, then the key
# A tiny key domain: many equal keys and many home-slot collisions in small tables
# (deletion has to shift clusters back).
small_keys = st.lists(st.integers(0, 3), min_size=WIDTH, max_size=WIDTH)
int64s = st.integers(-(2**63), 2**63 - 1)


class Entries:
    """Rows holding keys, an ExactIndex over them, and a free list of rows."""

    def __init__(self, capacity: int, *, jit: bool = True, rows: int = 256):
        self.index = ExactIndex(WIDTH, KEY_AT, capacity, jit=jit)
        self.rows = np.zeros((rows, KEY_AT + WIDTH), np.int64)
        self.free = list(range(rows - 1, -1, -1))

    def add(self, key) -> int:
        """The row of ``key``: its existing one, or a new one."""
        e = self.find(key)
        if e < 0:
            e = self.free.pop()
            self.index.add(self.rows, e, key)
        return e

    def find(self, key) -> int:
        return int(self.index.find_batch(self.rows, np.array([key], np.int64))[0])

    def remove(self, key) -> int:
        e = self.index.remove(self.rows, key)
        if e >= 0:
            self.free.append(e)
        return e


def check_index_invariants(entries: Entries) -> None:
    """Count, stored hashes, reachability from the home slot, no duplicate keys or rows."""
    index = entries.index.index
    used = index != 0
    assert int(used.sum()) == len(entries.index) <= entries.index.state[ES_LIMIT]
    nslots = index.shape[0]
    assert nslots & (nslots - 1) == 0
    seen_keys, seen_rows = set(), set()
    for s in np.flatnonzero(used):
        e = int(index[s] & M32) - 1
        key = entries.rows[e, KEY_AT:]
        h31 = int(index[s]) >> 32
        assert h31 == em_hash31(python_source(hash_row)(key))
        j = h31 & (nslots - 1)
        while j != s:  # no empty slot between home and the entry
            assert used[j], "entry unreachable from its home slot"
            j = (j + 1) % nslots
        k = tuple(int(x) for x in key)
        assert k not in seen_keys and e not in seen_rows
        seen_keys.add(k)
        seen_rows.add(e)


class ExactVersusDict(RuleBasedStateMachine):
    """Random add/find/remove/clear/grow sequences on the compiled index and a dict."""

    @initialize(capacity=st.integers(1, 6))
    def setup(self, capacity):
        self.entries = Entries(capacity)
        self.model: dict[tuple, int] = {}

    @rule(key=small_keys)
    def add(self, key):
        e = self.entries.add(key)
        assert self.model.setdefault(tuple(key), e) == e

    @rule(key=small_keys)
    def find(self, key):
        assert self.entries.find(key) == self.model.get(tuple(key), -1)

    @rule(key=small_keys)
    def remove(self, key):
        assert self.entries.remove(key) == self.model.pop(tuple(key), -1)

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def remove_existing(self, data):
        key = data.draw(st.sampled_from(sorted(self.model)))
        assert self.entries.remove(key) == self.model.pop(key)

    @precondition(lambda self: len(self.model) > 0)
    @rule(hand=st.integers(0, 64))
    def take_next(self, hand):
        """The clock hand's eviction: the first used slot from ``hand`` goes."""
        index = self.entries.index
        e, nxt = em_take_next(index.index, index.state, np.int64(hand))
        key = tuple(int(x) for x in self.entries.rows[e, KEY_AT:])
        assert self.model.pop(key) == e and nxt >= 1
        self.entries.free.append(e)

    @rule(queries=st.lists(small_keys, min_size=0, max_size=8))
    def find_batch(self, queries):
        qkeys = np.array(queries, np.int64).reshape(len(queries), WIDTH)
        got = self.entries.index.find_batch(self.entries.rows, qkeys)
        assert got.tolist() == [self.model.get(tuple(q), -1) for q in queries]

    @rule()
    def clear(self):
        self.entries.index.clear()
        self.entries.free.extend(self.model.values())
        self.model.clear()

    # bounded: each growth doubles the slots, and a run of them would ask for gigabytes
    @precondition(lambda self: self.entries.index.index.shape[0] < 1 << 12)
    @rule()
    def grow(self):
        self.entries.index.grow()

    @invariant()
    def same_contents(self):
        assert len(self.entries.index) == len(self.model)
        assert sorted(self.entries.index.entries().tolist()) == sorted(self.model.values())
        check_index_invariants(self.entries)


TestExactVersusDict = ExactVersusDict.TestCase
TestExactVersusDict.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


ops = st.lists(st.tuples(st.sampled_from(["add", "remove", "find", "grow"]), small_keys),
               max_size=80)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(ops=ops)
def test_jitted_kernels_match_their_python_source(ops):
    compiled, plain = Entries(2, jit=True), Entries(2, jit=False)
    for op, key in ops:
        if op == "add":
            assert compiled.add(key) == plain.add(key)
        elif op == "remove":
            assert compiled.remove(key) == plain.remove(key)
        elif op == "grow":
            compiled.index.grow()
            plain.index.grow()
        else:
            assert compiled.find(key) == plain.find(key)
    # Same slots, same order: the whole arrays agree, not only the answers.
    for a, b in zip(compiled.index.tables, plain.index.tables, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(compiled.rows, plain.rows)


@settings(max_examples=200, deadline=None)
@given(row=st.lists(int64s, min_size=1, max_size=24))
def test_hash_is_the_same_compiled_and_plain_and_non_negative(row):
    arr = np.array(row, np.int64)
    h = hash_row(arr)
    assert h == python_source(hash_row)(arr)
    assert 0 <= h < 2**63


def test_hash_spreads_sequential_and_single_bit_keys():
    """Low bits (the bucket index) of structured keys fill the buckets evenly."""
    n, buckets = 1 << 14, 1 << 10
    rows = np.zeros((n, 5), np.int64)
    rows[:, 4] = np.arange(n)  # only the last column differs (e.g. a port)
    low = np.array([hash_row(r) & (buckets - 1) for r in rows])
    counts = np.bincount(low, minlength=buckets)
    assert counts.max() <= 3 * n // buckets
    # Keys differing in one high bit of a 48-bit column (MACs) differ in the index often.
    base = np.zeros(5, np.int64)
    flips = 0
    for bit in range(48):
        other = base.copy()
        other[1] = 1 << bit
        flips += (hash_row(base) ^ hash_row(other)) & (buckets - 1) != 0
    assert flips >= 46
    # Column order matters: swapped columns do not collide.
    a = np.array([1, 2, 0, 0, 0], np.int64)
    assert hash_row(a) != hash_row(a[[1, 0, 2, 3, 4]])


@settings(max_examples=80, deadline=None)
@given(order=st.permutations(list(range(8))), seed=st.integers(0, 2**32 - 1))
def test_backward_shift_deletion_in_a_crowded_fixed_table(order, seed):
    """A full index (load 1/2, long clusters): remove in any order, the rest stays found."""
    entries = Entries(slots_for(8) // 2)
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 1000, size=(8, WIDTH))
    keys[:, 0] = np.arange(8)  # distinct
    rows = [entries.add(k) for k in keys]
    assert entries.index.index.shape[0] == slots_for(8)  # no growth: it is full
    alive = set(range(8))
    for i in order:
        assert entries.remove(keys[i]) == rows[i]
        alive.discard(i)
        for j in range(8):
            assert entries.find(keys[j]) == (rows[j] if j in alive else -1)
        check_index_invariants(entries)
    assert len(entries.index) == 0 and not entries.index.index.any()


def test_growth_keeps_every_entry_without_reading_a_row():
    """Growth puts slots back from their stored hashes: rows are not read (here: zeroed
    while it grows, then restored), and every key is found afterwards."""
    rng = np.random.default_rng(7)
    entries = Entries(4, rows=5000)
    keys = rng.integers(0, 2**48, size=(5000, WIDTH))
    got_rows = [entries.add(k) for k in keys]
    assert len(entries.index) == 5000 and entries.index.capacity >= 5000
    saved = entries.rows.copy()
    entries.rows[:] = 0
    entries.index.grow()
    entries.rows[:] = saved
    misses = keys.copy()
    misses[:, 2] ^= 1 << 47
    got = entries.index.find_batch(entries.rows, np.concatenate([keys, misses]))
    assert got[:5000].tolist() == got_rows
    assert (got[5000:] == -1).all()
    check_index_invariants(entries)


def test_misuse_raises():
    entries = Entries(3)
    with pytest.raises(ValueError):
        entries.index.add(entries.rows, 0, [1, 2])
    with pytest.raises(ValueError):
        entries.index.find_batch(entries.rows, np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError):
        ExactIndex(0, 0)

"""MegaflowCache (datapath/megaflow.py) against the linear ReferenceMegaflow, and its compiled
kernels against their own source.

Measured on the 2-vCPU build machine (not asserted; numba 0.68, 10,000 entries, batches of
1,024 hitting keys in cache, masks of 7 columns incl. recirc_id, one Python call per batch):
mf_lookup_batch ~13.5 M lookups/s with 1 mask; ~3.8 M/s with 8 masks holding the entries
evenly (each key probes 4.5 masks on average). Streaming 58-column keys from memory: ~7 / ~3.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ctaccel.datapath.megaflow import (
    MF_FULL,
    MF_RECIRC,
    MF_WIDTH,
    MS_N_ENTRIES,
    MS_N_MASKS,
    MegaflowCache,
    ReferenceMegaflow,
    make_mf_key,
    make_mf_keys,
    mf_insert,
    mf_lookup,
)
from ctaccel.hashtable import python_source
from ctaccel.packet import key as K

# Columns the random keys vary in; everything else stays 0. A 48-bit MAC, the in_port, a
# port, ct_state and the recirc_id: enough to build overlapping and disjoint masks.
VARIED = (K.IN_PORT, K.DL_SRC, K.TP_DST, K.CT_STATE, MF_RECIRC)
FIELD_MASKS = {
    K.IN_PORT: (0, 0x3, 0xFFFF),
    K.DL_SRC: (0, 0xFF0000000000, 0xFFFFFFFFFFFF),
    K.TP_DST: (0, 0xFF00, 0xFFFF),
    K.CT_STATE: (0, 0x22, 0xFF),
    MF_RECIRC: (0, 0xFFFFFFFF),
}
FIELD_VALUES = {
    K.IN_PORT: st.integers(0, 5),
    K.DL_SRC: st.sampled_from([0, 0x0A0000000001, 0x0A0000000002, 0xFF0000000001]),
    K.TP_DST: st.sampled_from([22, 80, 0x1F90, 0x1F91]),
    K.CT_STATE: st.sampled_from([0, 0x21, 0x22, 0x2A]),
    MF_RECIRC: st.integers(0, 2),
}


def vector(values: dict[int, int]) -> np.ndarray:
    v = np.zeros(MF_WIDTH, np.int64)
    for col, x in values.items():
        v[col] = x
    return v


masks_st = st.fixed_dictionaries({c: st.sampled_from(FIELD_MASKS[c]) for c in VARIED}).map(vector)
keys_st = st.fixed_dictionaries({c: FIELD_VALUES[c] for c in VARIED}).map(vector)


def check_cache_invariants(cache: MegaflowCache) -> None:
    n_masks, n = cache.n_masks, len(cache)
    assert sorted(cache.mask_order[:n_masks].tolist()) == list(range(n_masks))
    assert set(cache.entry_mask_id[:n].tolist()) == set(range(n_masks))  # no empty mask
    pairs = set()
    for e in range(n):
        m = int(cache.entry_mask_id[e])
        assert not (cache.entry_key[e] & ~cache.masks[m]).any()  # stored masked
        pairs.add((m, cache.entry_key[e].tobytes()))
        cols = np.flatnonzero(cache.masks[m])
        assert cache.mask_ncols[m] == cols.size
        assert cache.mask_cols[m, : cols.size].tolist() == cols.tolist()
    assert len(pairs) == n
    assert sorted(cache.index[cache.index[:, 0] != 0, 0].tolist()) == list(range(1, n + 1))
    assert not cache.entry_key[n:].any() and not cache.masks[n_masks:].any()


class MegaflowVersusReference(RuleBasedStateMachine):
    """Random installs, lookups (single and batch), resorts and flushes on both."""

    @initialize(capacity=st.integers(1, 4), max_masks=st.integers(1, 3))
    def setup(self, capacity, max_masks):
        self.cache = MegaflowCache(capacity, max_masks)
        self.model = ReferenceMegaflow()

    @rule(mask=masks_st, key=keys_st, value=st.integers(0, 2**40), masked_first=st.booleans())
    def insert(self, mask, key, value, masked_first):
        given_key = key & mask if masked_first else key
        assert self.cache.insert(mask, given_key, value) == self.model.insert(mask, key, value)

    @rule(key=keys_st)
    def lookup(self, key):
        e = self.cache.lookup(key)
        assert e == self.model.lookup(key)
        if e >= 0:
            assert self.cache.value(e) == self.model.entries[e][2]

    @rule(queries=st.lists(keys_st, max_size=8))
    def lookup_batch(self, queries):
        batch = np.array(queries, np.int64).reshape(len(queries), MF_WIDTH)
        got = self.cache.lookup_batch(batch).tolist()
        assert got == [self.model.lookup(q) for q in queries]

    @rule()
    def resort(self):
        self.cache.resort()
        self.model.resort()

    @rule()
    def flush(self):
        self.cache.flush()
        self.model.flush()

    @invariant()
    def same_state(self):
        assert len(self.cache) == len(self.model)
        assert list(self.cache.entries()) == self.model.entries
        assert self.cache.entry_hits[: len(self.cache)].tolist() == self.model.entry_hits
        order = [
            tuple(int(x) for x in self.cache.masks[m])
            for m in self.cache.mask_order[: self.cache.n_masks]
        ]
        assert order == self.model.mask_order
        check_cache_invariants(self.cache)


TestMegaflowVersusReference = MegaflowVersusReference.TestCase
TestMegaflowVersusReference.settings = settings(
    max_examples=120, stateful_step_count=40, deadline=None
)

ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), masks_st, keys_st),
        st.tuples(st.just("lookup"), st.just(None), keys_st),
        st.tuples(st.just("resort"), st.just(None), st.just(None)),
    ),
    max_size=50,
)


@settings(max_examples=40, deadline=None)
@given(ops=ops)
def test_jitted_kernels_match_their_python_source(ops):
    compiled = MegaflowCache(2, 1, jit=True)
    plain = MegaflowCache(2, 1, jit=False)
    for i, (op, mask, key) in enumerate(ops):
        if op == "insert":
            assert compiled.insert(mask, key, i) == plain.insert(mask, key, i)
        elif op == "lookup":
            assert compiled.lookup(key) == plain.lookup(key)
        else:
            compiled.resort()
            plain.resort()
    batch = np.array([k for _, _, k in ops if k is not None], np.int64).reshape(-1, MF_WIDTH)
    np.testing.assert_array_equal(compiled.lookup_batch(batch), plain.lookup_batch(batch))
    for a, b in zip(compiled.tables, plain.tables, strict=True):
        np.testing.assert_array_equal(a, b)


def test_zero_mask_matches_everything_but_more_specific_masks_come_first():
    cache = MegaflowCache(8, 4)
    exact = vector({K.IN_PORT: 0xFFFF, MF_RECIRC: 0xFFFFFFFF})
    e_port = cache.insert(exact, vector({K.IN_PORT: 3}), 30)
    e_any = cache.insert(np.zeros(MF_WIDTH, np.int64), vector({K.IN_PORT: 9, K.TP_DST: 80}), 1)
    assert cache.lookup(vector({K.IN_PORT: 3, K.TP_DST: 443})) == e_port  # first mask wins
    assert cache.lookup(vector({K.IN_PORT: 4})) == e_any
    assert cache.lookup(vector({K.IN_PORT: 3, MF_RECIRC: 1})) == e_any
    assert cache.value(e_any) == 1
    assert (cache.entry_key[e_any] == 0).all()  # the masked key of a zero mask is zero
    # After the zero mask collects more hits, resort puts it first: it now shadows port 3.
    cache.lookup(vector({K.IN_PORT: 5}))
    cache.resort()
    assert cache.lookup(vector({K.IN_PORT: 3})) == e_any


def test_recirc_id_distinguishes_otherwise_equal_keys():
    cache = MegaflowCache(8, 2)
    mask = vector({K.IN_PORT: 0xFFFF, K.CT_STATE: 0xFF, MF_RECIRC: 0xFFFFFFFF})
    key = np.zeros(K.KEY_WIDTH, np.int64)
    key[K.IN_PORT] = 1
    key[K.CT_STATE] = K.CS_TRACKED | K.CS_ESTABLISHED
    key[K.L3_OFS] = 14  # parse facts are not part of a megaflow key
    first, second = np.empty(MF_WIDTH, np.int64), np.empty(MF_WIDTH, np.int64)
    make_mf_key(key, 0, first)
    make_mf_key(key, 7, second)
    assert first[: K.PARSE_FIRST].tolist() == key[: K.PARSE_FIRST].tolist()
    assert (first[MF_RECIRC], second[MF_RECIRC]) == (0, 7)
    e0 = cache.insert(mask, first, 100)
    assert cache.lookup(second) == -1
    e7 = cache.insert(mask, second, 200)
    assert e0 != e7 and cache.n_masks == 1
    assert cache.lookup(first) == e0 and cache.lookup(second) == e7
    batch = np.empty((2, MF_WIDTH), np.int64)
    make_mf_keys(np.stack([key, key]), np.array([7, 0], np.int64), batch)
    assert cache.lookup_batch(batch).tolist() == [e7, e0]


@pytest.mark.parametrize("jit", [True, False])
def test_kernel_reports_full_and_changes_nothing(jit):
    cache = MegaflowCache(2, 1, jit=jit)
    insert = mf_insert if jit else python_source(mf_insert)
    lookup = mf_lookup if jit else python_source(mf_lookup)
    mask_a = vector({K.IN_PORT: 0xFFFF})
    mask_b = vector({K.TP_DST: 0xFFFF})
    assert insert(cache.tables, mask_a, vector({K.IN_PORT: 1}), 10) == 0
    before = [a.copy() for a in cache.tables]
    # a second mask when the only mask slot is taken
    assert insert(cache.tables, mask_b, vector({K.TP_DST: 80}), 11) == MF_FULL
    for a, b in zip(cache.tables, before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert insert(cache.tables, mask_a, vector({K.IN_PORT: 2}), 12) == 1
    # entry rows used up; an existing entry can still be updated
    assert insert(cache.tables, mask_a, vector({K.IN_PORT: 3}), 13) == MF_FULL
    assert insert(cache.tables, mask_a, vector({K.IN_PORT: 1, K.TP_DST: 5}), 14) == 0
    assert lookup(*cache.tables, vector({K.IN_PORT: 1})) == 0
    assert cache.value(0) == 14 and cache.state[MS_N_ENTRIES] == 2
    # The Python method grows and succeeds.
    assert cache.insert(mask_b, vector({K.TP_DST: 80}), 11) == 2
    assert cache.capacity == 4 and cache.max_masks == 2 and cache.n_masks == 2
    assert cache.lookup(vector({K.IN_PORT: 2})) == 1


def test_many_masks_and_growth_keep_every_entry():
    rng = np.random.default_rng(3)
    cache = MegaflowCache(16, 2)
    model = ReferenceMegaflow()
    masks = []
    for i in range(150):  # 150 distinct masks over the L3/L4 columns
        m = vector({MF_RECIRC: 0xFFFFFFFF, K.IN_PORT: 0xFFFF})
        m[K.NW_SRC + 3] = (0xFFFFFFFF << (32 - (i % 33))) & 0xFFFFFFFF
        m[K.TP_DST] = 0xFFFF if i >= 33 else 0
        m[K.REG0 + (i // 33)] = 0xFFFFFFFF
        masks.append(m)
    assert len({m.tobytes() for m in masks}) == 150
    keys = np.zeros((2000, MF_WIDTH), np.int64)
    keys[:, K.IN_PORT] = rng.integers(1, 4, 2000)
    keys[:, K.NW_SRC + 3] = rng.integers(0, 2**32, 2000)
    keys[:, K.TP_DST] = rng.integers(0, 2**16, 2000)
    for i, k in enumerate(keys):
        assert cache.insert(masks[i % 150], k, i) == model.insert(masks[i % 150], k, i)
    assert cache.n_masks == 150 and len(cache) == len(model)
    probes = np.concatenate([keys, rng.integers(0, 2**16, size=(200, MF_WIDTH))])
    got = cache.lookup_batch(probes)
    assert got.tolist() == [model.lookup(k) for k in probes]
    assert (got[:2000] >= 0).all()
    check_cache_invariants(cache)
    stats = cache.stats()
    assert stats["masks"] == 150 and stats["entries"] == len(model)
    assert stats["lookups"] == 2200 and stats["hits"] == int((got >= 0).sum())


def test_flush_drops_everything_in_place():
    cache = MegaflowCache(4, 2)
    tables = cache.tables
    mask = vector({K.IN_PORT: 0xFFFF})
    cache.insert(mask, vector({K.IN_PORT: 1}), 5)
    assert cache.lookup(vector({K.IN_PORT: 1})) == 0
    cache.flush()
    assert cache.tables[0] is tables[0] and cache.tables[-2] is tables[-2]
    assert cache.state[MS_N_MASKS] == 0 and len(cache) == 0
    assert cache.lookup(vector({K.IN_PORT: 1})) == -1
    assert not any(a.any() for a in cache.tables[:-1])
    assert cache.stats()["lookups"] == 2 and cache.stats()["hits"] == 1
    assert cache.insert(mask, vector({K.IN_PORT: 2}), 6) == 0  # entry rows restart at 0


def test_misuse_raises():
    cache = MegaflowCache()
    with pytest.raises(ValueError):
        cache.insert(np.zeros(3, np.int64), np.zeros(MF_WIDTH, np.int64), 0)
    with pytest.raises(ValueError):
        cache.lookup_batch(np.zeros((2, K.KEY_WIDTH), np.int64))

"""The shared open addressing (ctaccel/hashtable.py) against a plain dict, collisions forced.

A small map built on the index layout the way conntrack and the megaflow cache use it: the
keys live in caller rows (row ``k`` holds key number ``k``), the index maps a key to its row.
Hashes are chosen to collide (a few home slots near the end of a 64-slot index, so clusters
wrap around) or are the real row hash; every step is checked against a dict, and the table's
invariants (reachability from the home slot, zeros in empty slots) are checked after it. The
same operations run compiled and as their plain-Python source must leave identical arrays.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ctaccel import hashtable as H
from ctaccel.jit import njit

N_KEYS = 48  # key numbers 0..47; at most 48 entries in 64 slots leaves empty slots
N_SLOTS = 64


def key_row(k: int) -> np.ndarray:
    return np.array([k, 1000 + 3 * k, -k], np.int64)


ROWS = np.stack([key_row(k) for k in range(N_KEYS)])


@njit(forceinline=True)
def _row_matches(t, s, key):
    rows = t[1]
    r = H.index_ref(t[0], s)
    for c in range(key.shape[0]):
        if rows[r, c] != key[c]:
            return False
    return True


OPS = H.open_addressing(H.INDEX_LAYOUT, _row_matches)
_find = OPS.find
_find_or_free = OPS.find_or_free
_delete_at = OPS.delete_at


@njit
def put(index, rows, k, h):
    """Map key number ``k`` (row ``k``) in; True when it was new."""
    s, found = _find_or_free(rows[k], h, index, rows)
    if not found:
        H.index_store(index, s, k, h)
    return not found


@njit
def get(index, rows, key, h):
    s = _find(key, h, index, rows)
    return -1 if s < 0 else H.index_ref(index, s)


@njit
def delete(index, rows, key, h):
    s = _find(key, h, index, rows)
    if s < 0:
        return -1
    r = H.index_ref(index, s)
    _delete_at(s, index, rows)
    return r


def colliding_hash(k: int) -> int:
    """Homes 61..63 only (wrapping clusters); the high bits still tell keys apart."""
    return (k << 20) | (61 + k % 3)


def real_hash(k: int) -> int:
    return int(H.python_source(H.hash_row)(key_row(k)))


def check_invariants(index: np.ndarray, hash_of) -> None:
    mask = index.shape[0] - 1
    for s in range(index.shape[0]):
        if index[s, 0] == 0:
            assert index[s, 1] == 0  # empty slots are zeros
            continue
        k = int(index[s, 0]) - 1
        assert index[s, 1] == hash_of(k)
        b = hash_of(k) & mask
        while b != s:  # reachable from the home slot without crossing an empty one
            assert index[b, 0] != 0
            b = (b + 1) & mask


key_ops = st.lists(st.tuples(st.sampled_from(["put", "get", "del"]), st.integers(0, N_KEYS - 1)))


@settings(max_examples=120, deadline=None)
@given(ops=key_ops, colliding=st.booleans())
def test_random_operations_match_a_dict(ops, colliding):
    hash_of = colliding_hash if colliding else real_hash
    index = np.zeros((N_SLOTS, 2), np.int64)
    ref: dict[int, int] = {}
    for op, k in ops:
        key, h = ROWS[k], hash_of(k)
        if op == "put":
            assert put(index, ROWS, k, h) == (k not in ref)
            ref[k] = k
        elif op == "del":
            assert delete(index, ROWS, key, h) == ref.pop(k, -1)
        for m in set(ref) | {k}:
            assert get(index, ROWS, ROWS[m], hash_of(m)) == ref.get(m, -1)
        assert np.count_nonzero(index[:, 0]) == len(ref)
        check_invariants(index, hash_of)


def test_a_full_cluster_wraps_and_shrinks_back():
    index = np.zeros((N_SLOTS, 2), np.int64)
    for k in range(N_KEYS):
        assert put(index, ROWS, k, colliding_hash(k))
    check_invariants(index, colliding_hash)
    assert index[: N_KEYS - 3, 0].all() and index[61:, 0].all()  # 61..63 then 0.. wrapped
    for k in range(0, N_KEYS, 2):
        assert delete(index, ROWS, ROWS[k], colliding_hash(k)) == k
        check_invariants(index, colliding_hash)
    assert np.count_nonzero(index[:, 0]) == N_KEYS // 2
    for k in range(N_KEYS):
        assert get(index, ROWS, ROWS[k], colliding_hash(k)) == (k if k % 2 else -1)


def _run(ops, hash_of, plain: bool):
    """The operations called from Python, compiled or as their source (the layout's helpers
    stay compiled either way)."""
    pick = H.python_source if plain else (lambda f: f)
    find, find_or_free, delete_at = pick(OPS.find), pick(OPS.find_or_free), pick(OPS.delete_at)
    add, remove = pick(H.index_add), pick(H.index_remove)
    index = np.zeros((N_SLOTS, 2), np.int64)
    answers = []
    for op, k in ops:
        key, h = ROWS[k], hash_of(k)
        if op == "put":
            s, found = find_or_free(key, h, index, ROWS)
            answers.append((int(s), bool(found)))
            if not found:
                add(index, k, h)
        elif op == "del":
            s = find(key, h, index, ROWS)
            answers.append(int(s))
            if s >= 0 and k % 2:
                delete_at(s, index, ROWS)
            elif s >= 0:
                assert remove(index, k, h)
        else:
            answers.append(int(find(key, h, index, ROWS)))
    return index, answers


@settings(max_examples=60, deadline=None)
@given(ops=key_ops, colliding=st.booleans())
def test_compiled_operations_match_their_python_source(ops, colliding):
    hash_of = colliding_hash if colliding else real_hash
    compiled = _run(ops, hash_of, plain=False)
    plain = _run(ops, hash_of, plain=True)
    np.testing.assert_array_equal(compiled[0], plain[0])
    assert compiled[1] == plain[1]


def test_remove_of_an_absent_entry_changes_nothing():
    index = np.zeros((8, 2), np.int64)
    H.index_add(index, 3, 5)
    before = index.copy()
    assert not H.index_remove(index, 4, 5)
    np.testing.assert_array_equal(index, before)
    assert H.index_remove(index, 3, 5) and not index.any()


def test_slots_for_is_a_power_of_two_with_the_asked_room():
    for entries, per, minimum in ((0, 4, 1), (1, 4, 1), (3, 2, 4), (1000, 2, 4), (5, 1, 8)):
        n = H.slots_for(entries, per, minimum)
        assert n & (n - 1) == 0 and n >= minimum and n >= per * max(entries, 1)
        assert n == minimum or n // 2 < per * max(entries, 1)


def test_the_jit_cache_digest_covers_this_module(tmp_path, monkeypatch):
    """Kernels inline these operations: editing hashtable.py must give a fresh numba cache."""
    import shutil
    from pathlib import Path

    from ctaccel import jit

    pkg = tmp_path / "ctaccel"
    shutil.copytree(Path(jit.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(jit, "_PACKAGE_DIR", str(pkg))
    before = jit.source_digest()
    with open(pkg / "hashtable.py", "a") as f:
        f.write("\n# read by kernels\n")
    assert jit.source_digest() != before

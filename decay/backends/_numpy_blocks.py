"""The NumPy fast path's blocks: how large they are, the scratch the rule's new lists
are cut from, and the gathering of many small tensors into one block per list
(:meth:`decay.backends.numpy_backend.NumpyBackend.run_elementwise`)."""

from __future__ import annotations

import numpy as np

# Elements per block of the in-place fast path: each operation of the rule's definition
# is one ufunc pass over the block, and the block's params, grads, slots and scratch stay
# in cache across those passes, so each parameter's bytes cross main memory once per
# step. Smaller blocks cost more Python calls per element; larger ones fall out of L2.
# Measured on this machine (AMD EPYC, 1 MiB L2 per core, 32 MiB L3), step time in
# copies of the same bytes, 10x1M/200x50k: 2**16 gave SGD 2.3-2.6, Adam-W 7.1-7.9;
# 2**15 2.7/8.4-9.4; 2**17 2.6-2.8/8.6-9.3.
BLOCK = 1 << 16
# Pieces smaller than this on average are gathered into one block per list before the
# update (see gathered): below it a ufunc call per piece costs more than a copy.
GATHER = 1 << 13


class Arena:
    """Scratch for the new lists of one elementwise call: a batch holds at most BLOCK
    elements, so each new list fits in one block, cut piece by piece. The lists die
    with the call (params and slots are written in place), so the blocks are reused."""

    def __init__(self):
        self.active = False
        self.blocks: dict = {}  # dtype -> list of BLOCK-sized arrays
        self.used: dict = {}  # dtype -> how many of them this call has taken
        self.gathers: dict = {}  # dtype -> arrays small pieces are gathered into

    def reset(self):
        self.used.clear()

    def gather_blocks(self, dtype, count: int) -> list:
        """``count`` BLOCK-sized arrays to gather pieces into, apart from take()'s."""
        pool = self.gathers.setdefault(dtype, [])
        while len(pool) < count:
            pool.append(np.empty(BLOCK, dtype))
        return pool

    def take(self, xs) -> list:
        if len(xs) == 1 and xs[0].ndim == 1:  # the usual call: one piece of a large tensor
            x = xs[0]
            k = self.used.get(x.dtype, 0)
            self.used[x.dtype] = k + 1
            pool = self.blocks.setdefault(x.dtype, [])
            if k == len(pool):
                pool.append(np.empty(BLOCK, x.dtype))
            return [pool[k][: x.size]]
        out, by_dtype = [], {}
        for x in xs:
            dtype = x.dtype
            at = by_dtype.get(dtype)
            if at is None:  # a new block for this list and dtype
                k = self.used.get(dtype, 0)
                self.used[dtype] = k + 1
                pool = self.blocks.setdefault(dtype, [])
                if k == len(pool):
                    pool.append(np.empty(BLOCK, dtype))
                at = by_dtype[dtype] = [pool[k], 0]
            block, start = at
            n = x.size
            at[1] = start + n
            out.append(block[start:start + n].reshape(x.shape))
        return out


def gathered(arena, fn, params, grads, slots):
    """``fn`` on many small pieces at once: gathered into one block each (one
    np.concatenate per list), updated by one call per operation instead of one per
    piece, and the params and slots scattered back. Per piece this costs a copy per
    written list instead of a ufunc call per operation."""
    blocks = arena.gather_blocks(params[0].dtype, 2 + len(slots))
    n = sum(x.size for x in params)
    p = np.concatenate(params, out=blocks[0][:n])
    g = np.concatenate(grads, out=blocks[1][:n])
    s = {name: np.concatenate(column, out=blocks[2 + k][:n]) for k, (name, column) in enumerate(slots.items())}
    work_p, work_s = [p], {name: [x] for name, x in s.items()}
    fn(work_p, [g], work_s)
    outputs = [(params, work_p[0])] + [(column, work_s[name][0]) for name, column in slots.items()]
    start = 0
    for i, piece in enumerate(params):
        stop = start + piece.size
        for pieces, block in outputs:
            np.copyto(pieces[i], block[start:stop])
        start = stop

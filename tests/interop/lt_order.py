"""lt_order.py - loratune's training data order, in Python, so that a transformers + PEFT loop
can feed the very micro-batches loratune's trainer feeds: the Philox-4x32-10 counter RNG of
lib/core/rng.h and the Fisher-Yates permutation of lib/data/dataset.c (lt_dataset_permutation),
and the trainer's cursor (lib/train/trainer.c next_records: batch_size records at a time from
epoch e's permutation, a short last micro-batch, a new permutation per epoch).

Checked against lt_dataset_permutation (libloratune_static.a) for sizes 1475, 16 and 7,
epochs 0 and 1: the same indices; the step-0 and loss-curve scripts depend on it.
"""
M32 = 0xFFFFFFFF


def philox(key, ctr_hi, ctr_lo):
    """lt_philox(key, ctr_hi, ctr_lo): four u32."""
    k0, k1 = key & M32, (key >> 32) & M32
    c0, c1 = ctr_lo & M32, (ctr_lo >> 32) & M32
    c2, c3 = ctr_hi & M32, (ctr_hi >> 32) & M32
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        n0 = ((p1 >> 32) ^ c1 ^ k0) & M32
        n2 = ((p0 >> 32) ^ c3 ^ k1) & M32
        c1, c3, c0, c2 = p1 & M32, p0 & M32, n0, n2
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c0, c1, c2, c3


def rng_u32(seed, stream, index):
    return philox(seed, stream, index >> 2)[index & 3]


def permutation(size, seed, epoch):
    """lt_dataset_permutation(size, seed, epoch) (sizes below 2^32)."""
    perm = list(range(size))
    draw = 0
    cache = {}
    for i in range(size, 1, -1):
        lim = M32 - (M32 % i + 1) % i
        while True:
            blk = draw >> 2
            if blk not in cache:
                cache.clear()
                cache[blk] = philox(seed, epoch, blk)
            x = cache[blk][draw & 3]
            draw += 1
            if x <= lim:
                break
        j = x % i
        perm[i - 1], perm[j] = perm[j], perm[i - 1]
    return perm


def micro_batches(n_records, batch_size, n_micro, seed):
    """The record indices of the first n_micro micro-batches the trainer packs."""
    out, epoch, cursor = [], 0, 0
    perm = permutation(n_records, seed, 0)
    for _ in range(n_micro):
        if cursor >= n_records:
            epoch, cursor = epoch + 1, 0
            perm = permutation(n_records, seed, epoch)
        k = min(batch_size, n_records - cursor)
        out.append(perm[cursor:cursor + k])
        cursor += k
    return out


if __name__ == "__main__":
    import sys
    n, seed, epoch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    print(" ".join(map(str, permutation(n, seed, epoch))))


def padded_rows(mb, device):
    """A micro-batch of (ids, labels) records as transformers takes it: right-padded [k, T] ids,
    attention mask and labels (-100 on padding), on `device` (torch is imported here only)."""
    import torch
    T = max(len(i) for i, _ in mb)
    ids = torch.zeros(len(mb), T, dtype=torch.long)
    att = torch.zeros(len(mb), T, dtype=torch.long)
    lab = torch.full((len(mb), T), -100, dtype=torch.long)
    for r, (i, l) in enumerate(mb):
        ids[r, :len(i)] = torch.tensor(i); att[r, :len(i)] = 1; lab[r, :len(l)] = torch.tensor(l)
    return ids.to(device), att.to(device), lab.to(device)

"""quant_ref.py - an independent numpy port of llama.cpp's reference K-quantizers
(ggml-quants.c quantize_row_q4_K_ref with make_qkx2_quants, quantize_row_q6_K_ref with
make_qx_quants), vectorised across blocks but keeping each block's float32 operation order, so
that it gives the bytes llama-quantize gives. The gguf package only quantizes Q8_0/Q5_x/BF16 in
numpy; this is the test oracle for Q4_K and Q6_K."""
import numpy as np

f32 = np.float32


def nearest_int(x):
    """ggml nearest_int: the 1.5*2^23 magic add (round half to even)."""
    v = (x.astype(f32) + f32(12582912.0)).astype(f32)
    return (v.view(np.int32) & 0x007FFFFF) - 0x00400000


def fp16_round(x):
    return x.astype(np.float16)


def make_qkx2(x, w, nmax, rmin, rdelta, nstep):
    """x, w: (B, n) float32. Returns scale (B,), the_min (B,), L (B, n) uint8."""
    B, n = x.shape
    mn = x[:, 0].copy()
    mx = x[:, 0].copy()
    sum_w = w[:, 0].copy()
    sum_x = (sum_w * x[:, 0]).astype(f32)
    for i in range(1, n):
        mn = np.where(x[:, i] < mn, x[:, i], mn)
        mx = np.where(x[:, i] > mx, x[:, i], mx)
        sum_w = (sum_w + w[:, i]).astype(f32)
        sum_x = (sum_x + (w[:, i] * x[:, i]).astype(f32)).astype(f32)
    mn = np.where(mn > 0, f32(0), mn).astype(f32)
    flat = mx == mn
    rng = np.where(flat, f32(1), (mx - mn).astype(f32)).astype(f32)
    iscale = (f32(nmax) / rng).astype(f32)
    scale = (f32(1) / iscale).astype(f32)
    L = np.zeros((B, n), np.uint8)
    best = np.zeros(B, f32)
    for i in range(n):
        l = np.clip(nearest_int((iscale * (x[:, i] - mn).astype(f32)).astype(f32)), 0, nmax)
        L[:, i] = l
        diff = ((scale * l.astype(f32)).astype(f32) + mn).astype(f32) - x[:, i]
        diff = diff.astype(f32)
        best = (best + (w[:, i] * (diff * diff).astype(f32)).astype(f32)).astype(f32)
    for is_ in range(nstep + 1):
        iscale = ((f32(rmin) + (f32(rdelta) * f32(is_)).astype(f32) + f32(nmax)).astype(f32) /
                  np.where(flat, f32(1), (mx - mn).astype(f32))).astype(f32)
        sl = np.zeros(B, f32)
        sl2 = np.zeros(B, f32)
        sxl = np.zeros(B, f32)
        Laux = np.zeros((B, n), np.uint8)
        for i in range(n):
            l = np.clip(nearest_int((iscale * (x[:, i] - mn).astype(f32)).astype(f32)), 0, nmax)
            Laux[:, i] = l
            lf = l.astype(f32)
            wl = (w[:, i] * lf).astype(f32)
            sl = (sl + wl).astype(f32)
            sl2 = (sl2 + (wl * lf).astype(f32)).astype(f32)
            sxl = (sxl + (wl * x[:, i]).astype(f32)).astype(f32)
        D = ((sum_w * sl2).astype(f32) - (sl * sl).astype(f32)).astype(f32)
        ok = (D > 0) & ~flat
        Ds = np.where(ok, D, f32(1))
        this_scale = (((sum_w * sxl).astype(f32) - (sum_x * sl).astype(f32)).astype(f32) / Ds).astype(f32)
        this_min = (((sl2 * sum_x).astype(f32) - (sl * sxl).astype(f32)).astype(f32) / Ds).astype(f32)
        pos = this_min > 0
        this_min = np.where(pos, f32(0), this_min).astype(f32)
        with np.errstate(divide="ignore", invalid="ignore"):
            this_scale = np.where(pos, (sxl / sl2).astype(f32), this_scale).astype(f32)
        err = np.zeros(B, f32)
        for i in range(n):
            diff = (((this_scale * Laux[:, i].astype(f32)).astype(f32) + this_min).astype(f32) - x[:, i]).astype(f32)
            err = (err + (w[:, i] * (diff * diff).astype(f32)).astype(f32)).astype(f32)
        take = ok & (err < best)
        L[take] = Laux[take]
        best = np.where(take, err, best)
        scale = np.where(take, this_scale, scale).astype(f32)
        mn = np.where(take, this_min, mn).astype(f32)
    scale = np.where(flat, f32(0), scale)
    L[flat] = 0
    return scale, (-mn).astype(f32), L


def quantize_q4_k(x):
    """x: (nblocks, 256) float32 -> (nblocks, 144) uint8"""
    x = np.ascontiguousarray(x, dtype=f32)
    nb = x.shape[0]
    sub = x.reshape(nb * 8, 32)
    sum_x2 = np.zeros(nb * 8, f32)
    for l in range(32):
        sum_x2 = (sum_x2 + (sub[:, l] * sub[:, l]).astype(f32)).astype(f32)
    av = np.sqrt((sum_x2 / f32(32)).astype(f32)).astype(f32)
    w = (av[:, None] + np.abs(sub)).astype(f32)
    scales, mins, L = make_qkx2(sub, w, 15, -1.0, 0.1, 20)
    scales = scales.reshape(nb, 8)
    mins = mins.reshape(nb, 8)
    L = L.reshape(nb, 256)
    max_scale = np.zeros(nb, f32)
    max_min = np.zeros(nb, f32)
    for j in range(8):
        max_scale = np.where(scales[:, j] > max_scale, scales[:, j], max_scale)
        max_min = np.where(mins[:, j] > max_min, mins[:, j], max_min)
    with np.errstate(divide="ignore"):
        inv_s = np.where(max_scale > 0, (f32(63) / max_scale).astype(f32), f32(0)).astype(f32)
        inv_m = np.where(max_min > 0, (f32(63) / max_min).astype(f32), f32(0)).astype(f32)
    ls = np.minimum(63, nearest_int((inv_s[:, None] * scales).astype(f32)) & 0xFF)
    lm = np.minimum(63, nearest_int((inv_m[:, None] * mins).astype(f32)) & 0xFF)
    sc = np.zeros((nb, 12), np.uint8)
    for j in range(8):
        if j < 4:
            sc[:, j] = ls[:, j]
            sc[:, j + 4] = lm[:, j]
        else:
            sc[:, j + 4] = (ls[:, j] & 0xF) | ((lm[:, j] & 0xF) << 4)
            sc[:, j - 4] |= ((ls[:, j] >> 4) << 6).astype(np.uint8)
            sc[:, j] |= ((lm[:, j] >> 4) << 6).astype(np.uint8)
    d = fp16_round((max_scale / f32(63)).astype(f32))
    dmin = fp16_round((max_min / f32(63)).astype(f32))
    df, dminf = d.astype(f32), dmin.astype(f32)
    for j in range(8):
        if j < 4:
            s, m = sc[:, j] & 63, sc[:, j + 4] & 63
        else:
            s = (sc[:, j + 4] & 0xF) | ((sc[:, j - 4] >> 6) << 4)
            m = (sc[:, j + 4] >> 4) | ((sc[:, j] >> 6) << 4)
        dd = (df * s.astype(f32)).astype(f32)
        dm = (dminf * m.astype(f32)).astype(f32)
        nz = dd != 0
        with np.errstate(divide="ignore", invalid="ignore"):
            q = ((x[:, 32 * j:32 * j + 32] + dm[:, None]).astype(f32) / np.where(nz, dd, f32(1))[:, None]).astype(f32)
        l = np.clip(nearest_int(q), 0, 15).astype(np.uint8)
        L[:, 32 * j:32 * j + 32] = np.where(nz[:, None], l, L[:, 32 * j:32 * j + 32])
    qs = np.zeros((nb, 128), np.uint8)
    for c in range(4):
        qs[:, 32 * c:32 * c + 32] = L[:, 64 * c:64 * c + 32] | (L[:, 64 * c + 32:64 * c + 64] << 4)
    out = np.concatenate([d.view(np.uint8).reshape(nb, 2), dmin.view(np.uint8).reshape(nb, 2), sc, qs], axis=1)
    return out


def make_qx(x, nmax):
    """x: (B, n) -> scale (B,), L (B, n) int8 (l + nmax). rmse_type 1, no weights."""
    B, n = x.shape
    ax = np.abs(x)
    amax = np.zeros(B, f32)
    mx = np.zeros(B, f32)
    for i in range(n):
        gt = ax[:, i] > amax
        amax = np.where(gt, ax[:, i], amax)
        mx = np.where(gt, x[:, i], mx)
    zero = amax < f32(1e-15)
    mxs = np.where(zero, f32(1), mx).astype(f32)
    w = (x * x).astype(f32)

    def pass_(iscale):
        slx = np.zeros(B, f32)
        sl2 = np.zeros(B, f32)
        L = np.zeros((B, n), np.int8)
        for i in range(n):
            l = np.clip(nearest_int((iscale * x[:, i]).astype(f32)), -nmax, nmax - 1)
            L[:, i] = l + nmax
            lf = l.astype(f32)
            slx = (slx + ((w[:, i] * x[:, i]).astype(f32) * lf).astype(f32)).astype(f32)
            sl2 = (sl2 + ((w[:, i] * lf).astype(f32) * lf).astype(f32)).astype(f32)
        return slx, sl2, L

    iscale = (f32(-nmax) / mxs).astype(f32)
    slx, sl2, L = pass_(iscale)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(sl2 != 0, (slx / sl2).astype(f32), f32(0)).astype(f32)
    best = (scale * slx).astype(f32)
    for is_ in range(-9, 10):
        if is_ == 0:
            continue
        iscale = (-(f32(nmax) + (f32(0.1) * f32(is_)).astype(f32)).astype(f32) / mxs).astype(f32)
        slx, sl2, Lc = pass_(iscale)
        take = (sl2 > 0) & (((slx * slx).astype(f32)) > ((best * sl2).astype(f32)))
        L[take] = Lc[take]
        with np.errstate(divide="ignore", invalid="ignore"):
            ns = (slx / sl2).astype(f32)
        scale = np.where(take, ns, scale).astype(f32)
        best = np.where(take, (ns * slx).astype(f32), best).astype(f32)
    scale = np.where(zero, f32(0), scale)
    L[zero] = 0
    return scale, L


def quantize_q6_k(x):
    """x: (nblocks, 256) float32 -> (nblocks, 210) uint8"""
    x = np.ascontiguousarray(x, dtype=f32)
    nb = x.shape[0]
    scales, L = make_qx(x.reshape(nb * 16, 16), 32)
    scales = scales.reshape(nb, 16)
    L = L.reshape(nb, 256).astype(np.int16)
    max_scale = np.zeros(nb, f32)
    max_abs = np.zeros(nb, f32)
    for ib in range(16):
        a = np.abs(scales[:, ib])
        gt = a > max_abs
        max_abs = np.where(gt, a, max_abs)
        max_scale = np.where(gt, scales[:, ib], max_scale)
    zero = max_abs < f32(1e-15)
    ms = np.where(zero, f32(1), max_scale).astype(f32)
    iscale = (f32(-128) / ms).astype(f32)
    d = fp16_round((f32(1) / iscale).astype(f32))
    sc = np.minimum(127, nearest_int((iscale[:, None] * scales).astype(f32))).astype(np.int8)
    df = d.astype(f32)
    for j in range(16):
        dd = (df * sc[:, j].astype(f32)).astype(f32)
        nz = dd != 0
        with np.errstate(divide="ignore", invalid="ignore"):
            q = (x[:, 16 * j:16 * j + 16] / np.where(nz, dd, f32(1))[:, None]).astype(f32)
        l = np.clip(nearest_int(q), -32, 31) + 32
        L[:, 16 * j:16 * j + 16] = np.where(nz[:, None], l, L[:, 16 * j:16 * j + 16])
    L = L.astype(np.uint8)
    ql = np.zeros((nb, 128), np.uint8)
    qh = np.zeros((nb, 64), np.uint8)
    for h in range(2):
        b = 128 * h
        for l in range(32):
            q1, q2, q3, q4 = L[:, b + l], L[:, b + l + 32], L[:, b + l + 64], L[:, b + l + 96]
            ql[:, 64 * h + l] = (q1 & 0xF) | ((q3 & 0xF) << 4)
            ql[:, 64 * h + l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4)
            qh[:, 32 * h + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
    out = np.concatenate([ql, qh, sc.view(np.uint8), d.view(np.uint8).reshape(nb, 2)], axis=1)
    out[zero] = 0
    return out

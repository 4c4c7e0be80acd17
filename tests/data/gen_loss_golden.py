"""Regenerates tests/data/loss_golden.json with numpy only (no torch), from formula inputs.

Run from the repository root: python tests/data/gen_loss_golden.py
"""
import json, numpy as np
def inputs():
    a = np.arange(2*5, dtype=np.float64).reshape(2, 5)
    s = np.sin(a) * 3.0
    t = np.cos(a * 0.7) * 2.0
    fs = np.sin(np.arange(2*3*4*4, dtype=np.float64).reshape(2,3,4,4) * 0.37)
    ft = np.cos(np.arange(2*5*4*4, dtype=np.float64).reshape(2,5,4,4) * 0.21) - 0.2
    ft_big = np.cos(np.arange(2*5*8*8, dtype=np.float64).reshape(2,5,8,8) * 0.13) + 0.1
    return s, t, fs, ft, ft_big
def log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))
def kd(s, t, T):
    ls, lt = log_softmax(s / T), log_softmax(t / T)
    return float((np.exp(lt) * (lt - ls)).sum() / s.shape[0] * T * T)
def am(f, p=2):
    m = (np.abs(f) ** p).mean(1).reshape(f.shape[0], -1)
    return m / np.linalg.norm(m, axis=1, keepdims=True)
def pool2(m):  # (N, H, W) -> (N, H/2, W/2) block mean
    n, h, w = m.shape
    return m.reshape(n, h // 2, 2, w // 2, 2).mean((2, 4))
def at_pair(fs, ft, p=2):
    ms = (np.abs(fs) ** p).mean(1)
    mt = (np.abs(ft) ** p).mean(1)
    if mt.shape != ms.shape:
        mt = pool2(mt)
    qs = ms.reshape(ms.shape[0], -1); qs = qs / np.linalg.norm(qs, axis=1, keepdims=True)
    qt = mt.reshape(mt.shape[0], -1); qt = qt / np.linalg.norm(qt, axis=1, keepdims=True)
    return float(((qs - qt) ** 2).mean())

# -- the part-1 baselines, written from the papers' formulas with explicit loops -------------
def relation_inputs():
    """Embeddings (B=5) of two widths, feature maps of two channel counts and sizes, labels."""
    e_s = np.sin(np.arange(5 * 6, dtype=np.float64).reshape(5, 6) * 0.9) + 0.3
    e_t = np.cos(np.arange(5 * 4, dtype=np.float64).reshape(5, 4) * 1.3) * 2.0
    m_s = np.sin(np.arange(5 * 3 * 4 * 4, dtype=np.float64).reshape(5, 3, 4, 4) * 0.29)
    m_t = np.cos(np.arange(5 * 2 * 8 * 8, dtype=np.float64).reshape(5, 2, 8, 8) * 0.17) + 0.1
    z_s = np.sin(np.arange(5 * 7, dtype=np.float64).reshape(5, 7) * 0.61) * 3.0
    z_t = np.cos(np.arange(5 * 7, dtype=np.float64).reshape(5, 7) * 0.43) * 4.0
    y = np.array([0, 3, 6, 2, 3])
    return e_s, e_t, m_s, m_t, z_s, z_t, y
def sp(fs, ft):
    b = fs.shape[0]
    def gram(f):
        q = f.reshape(b, -1)
        g = np.array([[q[i] @ q[j] for j in range(b)] for i in range(b)])
        return g / np.sqrt((g ** 2).sum(1, keepdims=True))
    d = gram(ft) - gram(fs)
    return float(sum(d[i, j] ** 2 for i in range(b) for j in range(b)) / (b * b))
def pkt(es, et, eps=1e-7):
    b = es.shape[0]
    def cond(e):
        k = np.empty((b, b))
        for i in range(b):
            for j in range(b):
                cos = e[i] @ e[j] / ((np.linalg.norm(e[i]) + eps) * (np.linalg.norm(e[j]) + eps))
                k[i, j] = (cos + 1) / 2
        return k / k.sum(1, keepdims=True)
    ps, pt = cond(es), cond(et)
    return float(np.mean(pt * np.log((pt + eps) / (ps + eps))))
def huber(a, b):
    d = np.abs(a - b)
    return float(np.mean(np.where(d < 1, 0.5 * d ** 2, d - 0.5)))
def rkd_parts(es, et):
    b = es.shape[0]
    def dist(e):
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(b)] for i in range(b)])
        return d / d[d > 0].mean()
    def angles(e):
        out = []
        for j in range(b):  # the angle at e_j
            for i in range(b):
                for k in range(b):
                    u, v = e[i] - e[j], e[k] - e[j]
                    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                    out.append(0.0 if nu == 0 or nv == 0 else (u @ v) / (nu * nv))
        return np.array(out)
    return huber(dist(es), dist(et)), huber(angles(es), angles(et))
def cc(es, et, gamma=0.4, p_order=2):
    from math import factorial
    def corr(e):
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        b = e.shape[0]
        out = np.zeros((b, b))
        for i in range(b):
            for j in range(b):
                # Taylor series of exp(-gamma ||e_i - e_j||^2) = exp(-2 gamma) exp(2 gamma e_i.e_j)
                out[i, j] = sum(np.exp(-2 * gamma) * (2 * gamma) ** p / factorial(p) * (e[i] @ e[j]) ** p
                                for p in range(p_order + 1))
        return out
    return float(np.mean((corr(es) - corr(et)) ** 2))
def nst(fs, ft):
    def pool_to(f, h):
        n, c, H, W = f.shape
        k = H // h
        return f.reshape(n, c, h, k, h, k).mean((3, 5))
    h = min(fs.shape[2], ft.shape[2])
    fs, ft = pool_to(fs, h), pool_to(ft, h)
    total = 0.0
    for n in range(fs.shape[0]):
        s = fs[n].reshape(fs.shape[1], -1); s = s / np.linalg.norm(s, axis=1, keepdims=True)
        t = ft[n].reshape(ft.shape[1], -1); t = t / np.linalg.norm(t, axis=1, keepdims=True)
        k = lambda a, b: np.mean([(a[i] @ b[j]) ** 2 for i in range(len(a)) for j in range(len(b))])
        total += k(t, t) + k(s, s) - 2 * k(s, t)
    return float(total / fs.shape[0])
def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()
def dkd_parts(zs, zt, y, T=4.0):
    tckd = nckd = 0.0
    for n in range(zs.shape[0]):
        ps, pt = softmax(zs[n] / T), softmax(zt[n] / T)
        g = y[n]
        bs, bt = np.array([ps[g], 1 - ps[g]]), np.array([pt[g], 1 - pt[g]])
        tckd += np.sum(bt * np.log(bt / bs))
        others = [c for c in range(zs.shape[1]) if c != g]
        qs, qt = ps[others] / ps[others].sum(), pt[others] / pt[others].sum()
        nckd += np.sum(qt * np.log(qt / qs))
    b = zs.shape[0]
    return float(tckd / b * T * T), float(nckd / b * T * T)
s, t, fs, ft, ft_big = inputs()
alpha = np.array([0.1, 0.2, 0.3, 0.4])
e_s, e_t, m_s, m_t, z_s, z_t, y = relation_inputs()
rkd_d, rkd_a = rkd_parts(e_s, e_t)
tckd, nckd = dkd_parts(z_s, z_t, y)
tckd_t1, nckd_t1 = dkd_parts(z_s, z_t, y, T=1.0)
out = {
    "_note": "numpy-computed by tests/data/gen_loss_golden.py; inputs are the formulas in inputs()",
    "kd_T1": kd(s, t, 1.0), "kd_T4": kd(s, t, 4.0),
    "attention_map_p2": am(fs).tolist(),
    "at_same_size": at_pair(fs, ft), "at_p3": at_pair(fs, ft, 3),
    "at_two_groups_resized": at_pair(fs, ft) + at_pair(fs, ft_big),
    "feature_l2": float(((fs - ft[:, :3]) ** 2).mean()),
    "entropy": float(-(alpha * np.log(alpha)).sum()),
    "sp_maps": sp(m_s, m_t), "sp_embeddings": sp(e_s, e_t),
    "pkt": pkt(e_s, e_t),
    "rkd_distance": rkd_d, "rkd_angle": rkd_a, "rkd_default": 25.0 * rkd_d + 50.0 * rkd_a,
    "cc_default": cc(e_s, e_s[:, :4] * 0.5 + e_t), "cc_gamma1_p3": cc(e_s, e_s[:, :4] * 0.5 + e_t, 1.0, 3),
    "nst_pooled": nst(m_s, m_t), "nst_same_size": nst(m_s, m_s[:, :2] ** 2),
    "dkd_tckd": tckd, "dkd_nckd": nckd, "dkd_default": 1.0 * tckd + 8.0 * nckd,
    "dkd_T1_a2_b3": 2.0 * tckd_t1 + 3.0 * nckd_t1,
}
if __name__ == "__main__":  # imported by the tests for its input formulas: write only when run
    json.dump(out, open("tests/data/loss_golden.json", "w"), indent=1)
    print(out["kd_T4"], out["at_two_groups_resized"])

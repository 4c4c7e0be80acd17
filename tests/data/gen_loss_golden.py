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
s, t, fs, ft, ft_big = inputs()
alpha = np.array([0.1, 0.2, 0.3, 0.4])
out = {
    "_note": "numpy-computed by tests/data/gen_loss_golden.py; inputs are the formulas in inputs()",
    "kd_T1": kd(s, t, 1.0), "kd_T4": kd(s, t, 4.0),
    "attention_map_p2": am(fs).tolist(),
    "at_same_size": at_pair(fs, ft), "at_p3": at_pair(fs, ft, 3),
    "at_two_groups_resized": at_pair(fs, ft) + at_pair(fs, ft_big),
    "feature_l2": float(((fs - ft[:, :3]) ** 2).mean()),
    "entropy": float(-(alpha * np.log(alpha)).sum()),
}
json.dump(out, open("tests/data/loss_golden.json", "w"), indent=1)
print(out["kd_T4"], out["at_two_groups_resized"])

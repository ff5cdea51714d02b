#!/usr/bin/env python3
"""Checks a `moe layer-dump` directory with nothing but the Python standard library.

An outside check of the runtime's MoE layer: parses the safetensors files itself (a second,
independent reader of the format), recomputes the layer from the files in float64 following
README.txt's formula (router scores, selection bias, group-limited top-k, normalisation,
scaling, SwiGLU experts, fused shared experts) and compares with router.safetensors and
output.safetensors at the tolerance the manifest states. Slow (pure Python): meant for small
dumps (the built-in model, a few tokens).

usage: check_layer_dump.py DIR        exit 0 when everything agrees, 1 otherwise
"""
import json
import math
import mmap
import struct
import sys

DTYPES = {"F32": ("f", 4), "I32": ("i", 4), "BF16": (None, 2)}


class Safetensors:
    """One file: the header parsed and checked; tensors decoded on demand (t[name] -> list)."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.blob = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        (n,) = struct.unpack_from("<Q", self.blob, 0)
        header = json.loads(self.blob[8:8 + n].decode("utf-8"))
        header.pop("__metadata__", None)
        self.base, self.path, self.header = 8 + n, path, header
        for name, t in header.items():
            size = DTYPES[t["dtype"]][1]
            begin, end = t["data_offsets"]
            count = 1
            for d in t["shape"]:
                count *= d
            assert count * size == end - begin, f"{path}: {name}: shape {t['shape']} vs {end - begin} bytes"

    def __getitem__(self, name):
        t = self.header[name]
        code, size = DTYPES[t["dtype"]]
        begin, end = t["data_offsets"]
        raw = self.blob[self.base + begin:self.base + end]
        count = (end - begin) // size
        if code is None:  # BF16: the upper half of an F32
            halves = struct.unpack(f"<{count}H", raw)
            return list(struct.unpack(f"<{count}f", struct.pack(f"<{count}I", *(h << 16 for h in halves))))
        return list(struct.unpack(f"<{count}{code}", raw))

    def __contains__(self, name):
        return name in self.header


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def ffn(x, gate, up, down, hidden, inter):
    h = []
    for i in range(inter):
        g = sum(a * b for a, b in zip(x, gate[i * hidden:(i + 1) * hidden]))
        u = sum(a * b for a, b in zip(x, up[i * hidden:(i + 1) * hidden]))
        h.append(g / (1.0 + math.exp(-g)) * u)
    return [sum(a * b for a, b in zip(h, down[o * inter:(o + 1) * inter])) for o in range(hidden)]


def main(d):
    m = json.load(open(f"{d}/manifest.json"))
    c, r, L = m["config"], m["router"], m["layer"]
    H, E, K, I, S = c["hidden"], r["num_experts"], r["top_k"], c["expert_intermediate"], c["num_shared_experts"]
    G, TG = r["num_groups"], r["topk_groups"]
    x = Safetensors(f"{d}/input.safetensors")["x"]
    w = Safetensors(f"{d}/weights.safetensors")
    router = Safetensors(f"{d}/router.safetensors")
    rt = {n: router[n] for n in ("logits", "topk_ids", "topk_weights")}
    y = Safetensors(f"{d}/output.safetensors")["y"]
    T = len(x) // H
    p = f"model.layers.{L}.mlp."
    gate = w[p + "gate.weight"]
    bias = w[p + "gate.e_score_correction_bias"] if r["selection_bias"] else [0.0] * E
    bad = 0
    worst = 0.0
    rel = 0.05 if m["precision"] == "int8" else 2e-5
    for t in range(T):
        xt = x[t * H:(t + 1) * H]
        logits = [f32(sum(a * b for a, b in zip(xt, gate[e * H:(e + 1) * H]))) for e in range(E)]
        if logits != rt["logits"][t * E:(t + 1) * E]:
            print(f"token {t}: logits differ"); bad += 1
        if r["score"] == "sigmoid":
            s = [1.0 / (1.0 + math.exp(-v)) for v in logits]
        else:
            mx = max(logits); ex = [math.exp(v - mx) for v in logits]; tot = sum(ex); s = [v / tot for v in ex]
        sel = [s[e] + bias[e] for e in range(E)]
        per = E // G
        gs = []
        for g in range(G):
            v = sorted(sel[g * per:(g + 1) * per], reverse=True)
            gs.append(v[0] + (v[1] if per > 1 else 0.0))
        keep = sorted(range(G), key=lambda g: (-gs[g], g))[:TG if G > 1 else 1]
        cand = sorted((e for e in range(E) if e // per in keep), key=lambda e: (-sel[e], e))[:K]
        tot = sum(s[e] for e in cand) if r["normalize_topk"] else 1.0
        wts = [s[e] / tot * r["routed_scaling"] for e in cand]
        if cand != rt["topk_ids"][t * K:(t + 1) * K]:
            print(f"token {t}: topk_ids {rt['topk_ids'][t * K:(t + 1) * K]} vs {cand}"); bad += 1
        for a, b in zip(wts, rt["topk_weights"][t * K:(t + 1) * K]):
            if abs(a - b) > 1e-6 * abs(a):
                print(f"token {t}: topk weight {b} vs {a}"); bad += 1
        ref = [0.0] * H
        for e, wk in zip(cand, wts):
            n = f"{p}experts.{e}."
            o = ffn(xt, w[n + "gate_proj.weight"], w[n + "up_proj.weight"], w[n + "down_proj.weight"], H, I)
            ref = [a + wk * b for a, b in zip(ref, o)]
        if S > 0:
            n = f"{p}shared_experts."
            o = ffn(xt, w[n + "gate_proj.weight"], w[n + "up_proj.weight"], w[n + "down_proj.weight"], H, S * I)
            ref = [a + b for a, b in zip(ref, o)]
        mx = max(abs(v) for v in ref)
        for h in range(H):
            err = abs(y[t * H + h] - ref[h])
            worst = max(worst, err / mx)
            if err > rel * mx + 1e-6:
                bad += 1
                if bad <= 5:
                    print(f"token {t} element {h}: {y[t * H + h]} vs {ref[h]}")
    print(f"{d}: {T} tokens, {bad} mismatches, worst |y - y_ref| / row max {worst:.3g} (tolerance {rel})")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__); sys.exit(2)
    sys.exit(main(sys.argv[1]))

#!/usr/bin/env python3
"""Compares two ONNX models: the graphs (nodes, inputs, outputs, opsets) must be identical and
every initializer equal in name, type and shape, its values within a stated tolerance.

Why a tolerance: `scripts/make_tiny_encoders.py` computes some weights with numpy's BLAS and
LAPACK kernels (norms, a QR rotation, a float32 product), whose last bit depends on the CPU
the kernels dispatch to; a model regenerated on another machine differs from the committed one
by an ulp or two in a few values (6e-8 was seen), which changes no embedding beyond 1e-6.

Usage: compare_onnx.py A.onnx B.onnx [--rtol 1e-5] [--atol 1e-6]
Prints one JSON line; exits 1 when the models differ beyond the tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--atol", type=float, default=1e-6)
    args = ap.parse_args()
    a, b = onnx.load(args.a), onnx.load(args.b)
    problems = []
    inits = {}
    for name, m in (("a", a), ("b", b)):
        inits[name] = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        del m.graph.initializer[:]
    if a.SerializeToString() != b.SerializeToString():
        problems.append("the graphs differ (nodes, inputs, outputs, opsets or metadata)")
    if set(inits["a"]) != set(inits["b"]):
        problems.append(f"initializers differ: {sorted(set(inits['a']) ^ set(inits['b']))}")
    worst = 0.0
    for name in sorted(set(inits["a"]) & set(inits["b"])):
        x, y = inits["a"][name], inits["b"][name]
        if x.dtype != y.dtype or x.shape != y.shape:
            problems.append(f"{name}: {x.dtype}{x.shape} against {y.dtype}{y.shape}")
            continue
        if x.dtype.kind in "fc":
            diff = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0))
            worst = max(worst, diff)
            if not np.allclose(x, y, rtol=args.rtol, atol=args.atol):
                problems.append(f"{name}: values differ by up to {diff:g}")
        elif not np.array_equal(x, y):
            problems.append(f"{name}: values differ")
    print(json.dumps({"same": not problems, "max_abs_diff": worst, "problems": problems}))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())

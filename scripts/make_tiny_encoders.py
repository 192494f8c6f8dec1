"""Generate blindspot's tiny synthetic encoders, deterministically, with their manifests.

Both encoders compute a soft colour histogram per pixel: feature k of a pixel is
exp(-|rgb - prototype_k|^2 / sigma^2), on the de-normalised [0, 1] colour. Mid-grey, the
background of every synthetic image, is subtracted so it contributes nothing.

- clip-tiny averages those features over the whole image, then rotates them (an orthogonal
  matrix), so it sees colour statistics only: blind to orientation, position and arrangement.
- dino-tiny averages them over a coarse 4x4 grid of cells and projects the grid, so it keeps
  where each colour is and tells a shape from its mirror image.

Different input sizes, dimensions and output names on purpose, so nothing downstream assumes
one shape. Run from the repository root:

    .venv/bin/python scripts/make_tiny_encoders.py models/tiny
"""

import itertools
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
GREY = np.array([0.5, 0.5, 0.5], dtype=np.float32)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def prototypes(levels):
    """Colour prototypes on a grid of levels, without the one at mid-grey."""
    protos = [p for p in itertools.product(levels, repeat=3) if not np.allclose(p, GREY)]
    return np.array(protos, dtype=np.float32)


def rbf(rgb, protos, sigma):
    """The per-pixel features for a batch of colours, as the graph computes them."""
    d2 = ((rgb[:, None, :] - protos[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / sigma**2).astype(np.float32)


def feature_nodes(protos, sigma, mean, std, size, fp16_input=False):
    """Nodes from the normalised input to per-pixel features `feat` [N, K, size, size]."""
    k = len(protos)
    pixels = "pixel_values_f32" if fp16_input else "pixel_values"
    inits = [
        numpy_helper.from_array(np.array(std, np.float32).reshape(1, 3, 1, 1), "std"),
        numpy_helper.from_array(np.array(mean, np.float32).reshape(1, 3, 1, 1), "mean"),
        numpy_helper.from_array((2 * protos / sigma**2).reshape(k, 3, 1, 1), "w"),
        numpy_helper.from_array(-(protos**2).sum(1) / sigma**2, "b"),
        numpy_helper.from_array(np.array(1 / sigma**2, np.float32), "inv_s2"),
    ]
    nodes = [helper.make_node("Cast", ["pixel_values"], [pixels], to=TensorProto.FLOAT)] if fp16_input else []
    nodes += [
        helper.make_node("Mul", [pixels, "std"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mean"], ["rgb"]),
        helper.make_node("Conv", ["rgb", "w", "b"], ["cross"], kernel_shape=[1, 1]),
        helper.make_node("ReduceSumSquare", ["rgb"], ["sq"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["sq", "inv_s2"], ["sq_s"]),
        helper.make_node("Sub", ["cross", "sq_s"], ["logit"]),
        helper.make_node("Exp", ["logit"], ["feat"]),
    ]
    return nodes, inits


def save(model_nodes, inits, outputs, size, name, out_dir, fp16_input=False):
    dtype = TensorProto.FLOAT16 if fp16_input else TensorProto.FLOAT
    graph = helper.make_graph(
        model_nodes,
        name,
        [helper.make_tensor_value_info("pixel_values", dtype, ["batch", 3, size, size])],
        outputs,
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="blindspot/scripts/make_tiny_encoders.py",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    (out_dir / f"{name}.onnx").write_bytes(model.SerializeToString())


def clip_tiny(out_dir, rotation, name="clip-tiny", fp16_input=False):
    size, sigma = 64, 0.15
    protos = prototypes([0.1, 0.35, 0.65, 0.9])
    k = len(protos)
    nodes, inits = feature_nodes(protos, sigma, CLIP_MEAN, CLIP_STD, size, fp16_input)
    inits += [
        numpy_helper.from_array(rbf(GREY[None], protos, sigma)[0], "grey_feat"),
        numpy_helper.from_array(rotation, "proj"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", ["feat"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["hist"], axis=1),
        helper.make_node("Sub", ["hist", "grey_feat"], ["centred"]),
        helper.make_node("MatMul", ["centred", "proj"], ["image_embeds"]),
    ]
    outputs = [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch", k])]
    save(nodes, inits, outputs, size, name, out_dir, fp16_input)
    return k


def dino_tiny(out_dir, rng):
    size, sigma, grid, dim = 56, 0.2, 4, 96
    protos = prototypes([0.1, 0.5, 0.9])
    k = len(protos)
    cell = size // grid
    projection = (rng.standard_normal((k * grid * grid, dim)) / np.sqrt(dim)).astype(np.float32)
    nodes, inits = feature_nodes(protos, sigma, IMAGENET_MEAN, IMAGENET_STD, size)
    inits += [
        numpy_helper.from_array(rbf(GREY[None], protos, sigma)[0].reshape(k, 1, 1), "grey_feat"),
        numpy_helper.from_array(projection, "proj"),
    ]
    nodes += [
        helper.make_node("AveragePool", ["feat"], ["cells"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Sub", ["cells", "grey_feat"], ["grid"]),
        helper.make_node("Flatten", ["grid"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "proj"], ["cls"]),
    ]
    outputs = [
        helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["batch", k, grid, grid]),
        helper.make_tensor_value_info("cls", TensorProto.FLOAT, ["batch", dim]),
    ]
    save(nodes, inits, outputs, size, "dino-tiny", out_dir)
    return dim


MANIFEST = """\
# {comment}
# Generated by: .venv/bin/python scripts/make_tiny_encoders.py models/tiny
id = "{id}"
onnx = "{id}.onnx"
input = "pixel_values"
input-dtype = "{dtype}"
output = "{output}"
dim = {dim}
image-size = {size}
resize-size = {resize}
resize = "shortest-side"
interpolation = "bicubic"
mean = {mean}
std = {std}
"""


def main():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "models/tiny")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240109)
    k = len(prototypes([0.1, 0.35, 0.65, 0.9]))
    rotation = np.linalg.qr(rng.standard_normal((k, k)))[0].astype(np.float32)
    clip_dim = clip_tiny(out_dir, rotation)
    dino_dim = dino_tiny(out_dir, rng)
    # The same CLIP with a float16 input, so the fp16 path of exported models is tested too.
    clip_tiny(out_dir, rotation, "clip-tiny-fp16", fp16_input=True)
    for name, dtype, comment in [
        ("clip-tiny", "float32", "Tiny CLIP-like encoder: global colour statistics only (blind to layout)."),
        ("clip-tiny-fp16", "float16", "clip-tiny with a float16 input, as --fp16 exports have."),
    ]:
        (out_dir / f"{name}.toml").write_text(
            MANIFEST.format(
                comment=comment, id=name, dtype=dtype, output="image_embeds", dim=clip_dim, size=64, resize=64,
                mean=CLIP_MEAN, std=CLIP_STD,
            )
        )
    (out_dir / "dino-tiny.toml").write_text(
        MANIFEST.format(
            comment="Tiny DINOv2-like encoder: colour statistics on a 4x4 grid (sees layout).",
            id="dino-tiny", dtype="float32", output="cls", dim=dino_dim, size=56, resize=64,
            mean=IMAGENET_MEAN, std=IMAGENET_STD,
        )
    )


if __name__ == "__main__":
    main()

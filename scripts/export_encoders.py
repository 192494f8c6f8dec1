"""Export CLIP and DINOv2 image encoders from Hugging Face checkpoints to ONNX for blindspot.

Each export writes two files into --out:

- `<name>.onnx`: one input `pixel_values` [batch, 3, S, S] (normalised, NCHW, dynamic batch) and
  one float32 output [batch, D]: `image_embeds` for CLIP (the projected image embedding, not
  normalised) or `cls` for DINOv2 (the CLS token after the final layernorm, which is HF's
  `last_hidden_state[:, 0]` and equals its `pooler_output`).
- `<name>.toml`: the manifest blindspot reads (`--clip` / `--dino`), with the preprocessing taken
  from the checkpoint's image processor config.

After exporting, the script runs the ONNX model with ONNX Runtime on random batches of 2, 1 and 3,
compares it with the PyTorch model and fails if they disagree. Run from the repository root:

    python scripts/export_encoders.py clip --model openai/clip-vit-large-patch14 --out models/
    python scripts/export_encoders.py dino --model facebook/dinov2-large --out models/

`--model` takes a hub name (needs network or the local HF cache) or a local checkpoint directory.
`--random-tiny` builds a small randomly initialised model of the same architecture instead, to
test the export without any weights; its manifest is marked as such.
"""

import argparse
import copy
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import (
    AutoConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    Dinov2Config,
    Dinov2Model,
)
from transformers.image_processing_base import ImageProcessingMixin

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# PIL resampling codes, as HF image processor configs store them.
RESAMPLE = {2: "bilinear", 3: "bicubic"}
# Weights above this size go to an external data file (ONNX protobufs are limited to 2 GiB).
MAX_INLINE_WEIGHT_BYTES = 1_800_000_000
INPUT = "pixel_values"
SEED = 0


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """The preprocessing a manifest describes."""

    image_size: int
    resize_size: int
    resize: str  # "shortest-side" | "squash"
    interpolation: str  # "bicubic" | "bilinear"
    mean: list
    std: list


class ClipImageEmbeds(torch.nn.Module):
    """CLIP vision tower plus visual projection: pixel_values -> image_embeds [N, projection_dim].

    Takes a CLIPModel or a CLIPVisionModelWithProjection: both have these two parts, and this is
    what their get_image_features / image_embeds compute.
    """

    def __init__(self, model):
        super().__init__()
        self.vision_model = model.vision_model
        self.visual_projection = model.visual_projection
        self.dim = model.visual_projection.out_features

    def forward(self, pixel_values):
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return self.visual_projection(pooled).float()


class DinoCls(torch.nn.Module):
    """DINOv2 backbone: pixel_values -> CLS token after the final layernorm [N, hidden_size]."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.dim = model.config.hidden_size

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).last_hidden_state[:, 0].float()


def tiny_clip():
    """A small CLIP vision tower + projection with random weights (seed before calling)."""
    return CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            patch_size=14,
            image_size=56,
            projection_dim=32,
        )
    )


def tiny_dino():
    """A small DINOv2 with random weights (seed before calling)."""
    return Dinov2Model(
        Dinov2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, patch_size=14, image_size=56)
    )


@dataclasses.dataclass(frozen=True)
class Arch:
    """What differs between the two encoders."""

    default_name: str
    model_classes: dict  # config.model_type of a checkpoint -> the class that loads it
    wrapper: type
    output: str
    tiny_model: object  # () -> a small model with random weights, for --random-tiny
    default_preprocess: Preprocess


ARCHS = {
    "clip": Arch(
        default_name="clip-vit-l-14",
        # From a full CLIPModel checkpoint only the vision tower and visual projection are used.
        model_classes={"clip": CLIPModel, "clip_vision_model": CLIPVisionModelWithProjection},
        wrapper=ClipImageEmbeds,
        output="image_embeds",
        tiny_model=tiny_clip,
        default_preprocess=Preprocess(224, 224, "shortest-side", "bicubic", CLIP_MEAN, CLIP_STD),
    ),
    "dino": Arch(
        default_name="dinov2-vit-l-14",
        model_classes={"dinov2": Dinov2Model},
        wrapper=DinoCls,
        output="cls",
        tiny_model=tiny_dino,
        default_preprocess=Preprocess(224, 256, "shortest-side", "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    ),
}


def load_model(arch, ref):
    """Load a checkpoint (hub name or local directory) in float32, in eval mode."""
    model_type = AutoConfig.from_pretrained(ref).model_type
    if model_type not in arch.model_classes:
        sys.exit(f"{ref}: model_type {model_type!r}, expected one of {', '.join(arch.model_classes)}")
    return arch.model_classes[model_type].from_pretrained(ref, dtype=torch.float32).eval()


def square_size(value, what):
    """An HF size entry (an int or a dict) that must describe a square."""
    if isinstance(value, int):
        return value
    if "shortest_edge" in value:
        return value["shortest_edge"]
    if value.get("height") == value.get("width") and value.get("height"):
        return value["height"]
    sys.exit(f"unsupported {what} in the image processor config: {value}")


def preprocess_from_config(cfg):
    """Map an HF image processor config (CLIPImageProcessor, BitImageProcessor, ...) to a Preprocess."""
    if not cfg.get("do_resize", True):
        sys.exit("the image processor does not resize; blindspot needs a fixed input size")
    if abs(cfg.get("rescale_factor", 1 / 255) - 1 / 255) > 1e-9 or not cfg.get("do_rescale", True):
        sys.exit("the image processor does not rescale pixels by 1/255; blindspot assumes it does")
    interpolation = RESAMPLE.get(cfg.get("resample", 3))
    if interpolation is None:
        sys.exit(f"unsupported resample {cfg['resample']!r} in the image processor config")
    size = cfg["size"]
    resize_size = square_size(size, "size")
    shortest_side = isinstance(size, int) or "shortest_edge" in size
    if cfg.get("do_center_crop", True) and "crop_size" in cfg:
        image_size = square_size(cfg["crop_size"], "crop_size")
    elif shortest_side:
        sys.exit("the image processor resizes the shortest side without a centre crop (non-square input)")
    else:
        image_size = resize_size
    if not shortest_side and image_size != resize_size:
        sys.exit("the image processor resizes to a fixed size and then crops; blindspot cannot express that")
    if cfg.get("do_normalize", True):
        mean, std = cfg["image_mean"], cfg["image_std"]
    else:
        mean, std = [0.0] * 3, [1.0] * 3
    return Preprocess(
        image_size=image_size,
        resize_size=resize_size,
        resize="shortest-side" if shortest_side else "squash",
        interpolation=interpolation,
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
    )


def load_preprocess(arch, ref):
    """The checkpoint's preprocessing, or the architecture's standard one if it has no processor config."""
    try:
        cfg, _ = ImageProcessingMixin.get_image_processor_dict(ref)
    except OSError:
        print(f"{ref}: no image processor config, using the standard {arch.default_name} preprocessing")
        return arch.default_preprocess
    return preprocess_from_config(cfg)


def export_onnx(module, image_size, dtype, path, output, opset):
    """Export module (already in dtype) to path with a dynamic batch axis."""
    example = torch.randn(2, 3, image_size, image_size, dtype=dtype)
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=[output],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes={INPUT: {0: torch.export.Dim("batch")}},
            external_data=weight_bytes > MAX_INLINE_WEIGHT_BYTES,
        )


def verify(module, path, image_size, input_dtype, output, dim):
    """Compare ONNX Runtime with the float32 PyTorch module on batches of 2, 1 and 3.

    The tolerance is 1e-3 for a float32 export and 1e-1 for float16, relative to the output's
    scale (max(1, max |reference|)).
    """
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    outputs = {o.name: o for o in session.get_outputs()}
    expected_type = "tensor(float16)" if input_dtype == "float16" else "tensor(float)"
    if inp.name != INPUT or inp.type != expected_type or isinstance(inp.shape[0], int):
        sys.exit(f"unexpected ONNX input {inp.name} {inp.type} {inp.shape}")
    if output not in outputs or outputs[output].shape[1] != dim:
        sys.exit(f"unexpected ONNX outputs {[(o.name, o.shape) for o in outputs.values()]}")
    tolerance = 1e-1 if input_dtype == "float16" else 1e-3
    rng = np.random.default_rng(SEED)
    for batch in (2, 1, 3):
        x = rng.standard_normal((batch, 3, image_size, image_size)).astype(input_dtype)
        with torch.no_grad():
            reference = module(torch.from_numpy(x.astype(np.float32))).numpy()
        (got,) = session.run([output], {INPUT: x})
        diff = float(np.abs(got - reference).max())
        cos = (got * reference).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
        limit = tolerance * max(1.0, float(np.abs(reference).max()))
        print(
            f"batch {batch}: onnx {output} {list(got.shape)} {got.dtype}, "
            f"max abs diff {diff:.3g} (limit {limit:.3g}), min cosine {cos.min():.6f}"
        )
        if got.shape != (batch, dim) or not diff <= limit:
            sys.exit(f"verification failed for batch {batch}")


def toml_value(value):
    """A str, int, float or list of them as a TOML value."""
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def write_manifest(path, comments, fields):
    """Write a TOML manifest: comment lines, then the fields in order."""
    lines = [f"# {c}" for c in comments] + [f"{key} = {toml_value(v)}" for key, v in fields.items()]
    path.write_text("\n".join(lines) + "\n")


def run(args):
    """Export, verify, then write the manifest (only once the model has passed)."""
    arch = ARCHS[args.arch]
    name = args.name or arch.default_name
    if args.random_tiny:
        torch.manual_seed(SEED)
        model = arch.tiny_model().eval()
        size = model.config.image_size
        pre = dataclasses.replace(arch.default_preprocess, image_size=size, resize_size=size)
        source = f"--random-tiny (random weights, seed {SEED}; NOT a trained encoder)"
    else:
        model = load_model(arch, args.model)
        pre = load_preprocess(arch, args.model)
        source = args.model
    module = arch.wrapper(model).eval()
    input_dtype = "float16" if args.fp16 else "float32"

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / f"{name}.onnx"
    exported = copy.deepcopy(module).half() if args.fp16 else module
    export_onnx(exported, pre.image_size, getattr(torch, input_dtype), onnx_path, arch.output, args.opset)
    verify(module, onnx_path, pre.image_size, input_dtype, arch.output, module.dim)
    comments = [
        f"{type(model).__name__} exported from {source}",
        f"Generated by: {shlex.join([Path(sys.executable).name, *sys.argv])}",
    ]
    fields = {
        "id": name,
        "onnx": onnx_path.name,
        "input": INPUT,
        "input-dtype": input_dtype,
        "output": arch.output,
        "dim": module.dim,
        "image-size": pre.image_size,
        "resize-size": pre.resize_size,
        "resize": pre.resize,
        "interpolation": pre.interpolation,
        "mean": pre.mean,
        "std": pre.std,
    }
    write_manifest(out / f"{name}.toml", comments, fields)
    written = sorted(p for p in out.iterdir() if p.name.startswith(f"{name}."))
    print("wrote " + ", ".join(str(p) for p in written))


def main():
    common = argparse.ArgumentParser(add_help=False)
    source = common.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="hub name or local checkpoint directory")
    source.add_argument(
        "--random-tiny", action="store_true", help="export a small random model instead (for testing)"
    )
    common.add_argument("--out", required=True, help="output directory (created if missing)")
    common.add_argument("--name", help="encoder id and file stem (default: clip-vit-l-14 / dinov2-vit-l-14)")
    common.add_argument(
        "--fp16", action="store_true", help="export in half precision (float16 input, float32 output)"
    )
    common.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="arch", required=True)
    sub.add_parser("clip", parents=[common], help="CLIP vision tower + projection -> image_embeds")
    sub.add_parser("dino", parents=[common], help="DINOv2 backbone -> cls")
    run(parser.parse_args())


if __name__ == "__main__":
    main()

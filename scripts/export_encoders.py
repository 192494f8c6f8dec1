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
    python scripts/export_encoders.py clip-text --model openai/clip-vit-large-patch14 --out models/

`clip-text` exports CLIP's text tower instead, writing three files into --out:

- `<name>-text.onnx`: inputs `input_ids` and `attention_mask` (int64 [batch, seq], dynamic batch
  and seq up to the context length) and one float32 output `text_embeds` [batch, D]: the
  projected text embedding (CLIPModel.get_text_features, CLIPTextModelWithProjection's
  text_embeds), not normalised, taken at the first end-of-text token as HF does.
- `<name>-text.tokenizer.json`: the checkpoint's Hugging Face tokenizer, copied (or converted by
  transformers when the checkpoint has none).
- `<name>-text.toml`: the text manifest: the files, the tensor names, `dim`, `context-length`
  (the config's max_position_embeddings), `logit-scale` (exp of a CLIPModel's logit_scale) and
  `pad-token` (the tokenizer's pad token, else its
  end-of-text token). Texts are tokenized with the tokenizer's special tokens, truncated to
  the context length, padded with the pad token and masked.

Its check runs ONNX Runtime and PyTorch on texts tokenized with the copied tokenizer and on
random token sequences of several lengths.

`--model` takes a hub name (needs network or the local HF cache) or a local checkpoint directory.
`--random-tiny` builds a small randomly initialised model of the same architecture instead, to
test the export without any weights; its manifest is marked as such. For `clip-text` it comes
with the tokenizer of blindspot's tiny encoders (from scripts/make_tiny_encoders.py).
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
from tokenizers import Tokenizer
from transformers import (
    AutoConfig,
    AutoTokenizer,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
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
TEXT_INPUTS = ["input_ids", "attention_mask"]
TEXT_OUTPUT = "text_embeds"
TOKENIZER_FILE = "tokenizer.json"
SEED = 0
# Texts the text tower's check tokenizes with the exported tokenizer.
CHECK_TEXTS = [
    "a photo of a red block",
    "a photo of an L shape with its foot pointing left",
    "a photo of the butterfly's wings, seen from above; 3 dots!",
]


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


class ClipTextEmbeds(torch.nn.Module):
    """CLIP text tower plus text projection: input_ids, attention_mask -> text_embeds [N, projection_dim].

    Takes a CLIPModel or a CLIPTextModelWithProjection: this is what their get_text_features /
    text_embeds compute (pooled at the first end-of-text token).
    """

    def __init__(self, model):
        super().__init__()
        self.text_model = model.text_model
        self.text_projection = model.text_projection
        self.dim = model.text_projection.out_features

    def forward(self, input_ids, attention_mask):
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.text_projection(pooled).float()


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


def tiny_clip_text(vocab_size, sot, eot):
    """A small CLIP text tower + projection with random weights (seed before calling)."""
    return CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=sot,
            eos_token_id=eot,
            pad_token_id=eot,
        )
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


def load_text_model(ref):
    """Load a CLIP checkpoint's text tower (from a full CLIPModel or a text-only one) in float32."""
    model_type = AutoConfig.from_pretrained(ref).model_type
    classes = {"clip": CLIPModel, "clip_text_model": CLIPTextModelWithProjection}
    if model_type not in classes:
        sys.exit(f"{ref}: model_type {model_type!r}, expected one of {', '.join(classes)}")
    return classes[model_type].from_pretrained(ref, dtype=torch.float32).eval()


def save_tokenizer(ref, path):
    """Copy the checkpoint's tokenizer.json to path (or let transformers convert its tokenizer
    when it has none); returns its pad token, or its end-of-text token when it has no pad token."""
    hf = AutoTokenizer.from_pretrained(ref)
    source = Path(ref) / TOKENIZER_FILE
    if not source.is_file() and not Path(ref).is_dir():
        try:
            from huggingface_hub import hf_hub_download

            source = Path(hf_hub_download(ref, TOKENIZER_FILE))
        except Exception as e:  # the hub or its cache has no tokenizer.json: convert below
            print(f"{ref}: no {TOKENIZER_FILE} ({type(e).__name__}), converting its tokenizer")
    if source.is_file():
        path.write_bytes(source.read_bytes())
    elif hf.is_fast:
        hf.backend_tokenizer.save(str(path))
    else:
        sys.exit(f"{ref}: no {TOKENIZER_FILE} and no fast tokenizer to convert")
    pad = hf.pad_token or hf.eos_token
    if pad is None:
        sys.exit(f"{ref}: the tokenizer has neither a pad token nor an end-of-text token")
    return pad


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


def export_text_onnx(module, context_length, vocab_size, path, opset):
    """Export the text module (weights already in their dtype) with dynamic batch and sequence axes."""
    ids = torch.randint(0, vocab_size, (2, context_length), dtype=torch.int64)
    mask = torch.ones_like(ids)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", min=2, max=context_length)
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    with torch.no_grad():
        torch.onnx.export(
            module,
            (ids, mask),
            str(path),
            input_names=TEXT_INPUTS,
            output_names=[TEXT_OUTPUT],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes={name: {0: batch, 1: seq} for name in TEXT_INPUTS},
            external_data=weight_bytes > MAX_INLINE_WEIGHT_BYTES,
        )


def text_batches(tokenizer, pad_id, context_length):
    """Token batches for the text check: CHECK_TEXTS padded to the context length, then random
    token sequences (each ending in the end-of-text token, padded, masked) of other lengths."""
    sot, *_, eot = tokenizer.encode("a").ids  # the post-processor puts them around every text
    encoded = [tokenizer.encode(t).ids[:context_length] for t in CHECK_TEXTS]
    rng = np.random.default_rng(SEED)
    batches = []
    for texts, seq in ((encoded, context_length), (None, 16), (None, 5)):
        if texts is None:
            lengths = rng.integers(2, seq + 1, size=2 if seq == 16 else 1)
            # Random tokens below the special ones (CLIP's end-of-text is its highest id).
            texts = [[sot, *rng.integers(0, min(sot, eot), size=n - 2).tolist(), eot] for n in lengths]
        ids = np.full((len(texts), seq), pad_id, np.int64)
        mask = np.zeros_like(ids)
        for row, t in enumerate(texts):
            ids[row, : len(t)] = t
            mask[row, : len(t)] = 1
        batches.append((ids, mask))
    return batches


def verify_text(module, path, batches, fp16, dim):
    """Compare ONNX Runtime with the float32 PyTorch text module on the given token batches.

    The tolerance is as for the image export: 1e-3 for float32 weights, 1e-1 for float16.
    """
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    for name in TEXT_INPUTS:
        if name not in inputs or inputs[name].type != "tensor(int64)" or any(
            isinstance(d, int) for d in inputs[name].shape
        ):
            sys.exit(f"unexpected ONNX inputs {[(i.name, i.type, i.shape) for i in inputs.values()]}")
    if TEXT_OUTPUT not in outputs or outputs[TEXT_OUTPUT].shape[1] != dim:
        sys.exit(f"unexpected ONNX outputs {[(o.name, o.shape) for o in outputs.values()]}")
    tolerance = 1e-1 if fp16 else 1e-3
    for ids, mask in batches:
        with torch.no_grad():
            reference = module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        (got,) = session.run([TEXT_OUTPUT], {"input_ids": ids, "attention_mask": mask})
        diff = float(np.abs(got - reference).max())
        cos = (got * reference).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
        limit = tolerance * max(1.0, float(np.abs(reference).max()))
        print(
            f"batch {ids.shape[0]} x seq {ids.shape[1]}: onnx {TEXT_OUTPUT} {list(got.shape)} {got.dtype}, "
            f"max abs diff {diff:.3g} (limit {limit:.3g}), min cosine {cos.min():.6f}"
        )
        if got.shape != (ids.shape[0], dim) or not diff <= limit:
            sys.exit(f"verification failed for a batch of {ids.shape[0]} x {ids.shape[1]}")


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
        # The conventions of the Hugging Face processors these checkpoints come with:
        # convert_to_rgb composites alpha onto white, center_crop floors the offset, and a plain
        # Image.open applies no EXIF orientation. Change them to drop / half-even / apply to
        # match embeddings made with torchvision or OpenCLIP transforms instead.
        "alpha": "white",
        "crop-rounding": "floor",
        "exif": "ignore",
    }
    write_manifest(out / f"{name}.toml", comments, fields)
    written = sorted(p for p in out.iterdir() if p.name.startswith(f"{name}."))
    print("wrote " + ", ".join(str(p) for p in written))


def run_text(args):
    """Export CLIP's text tower and its tokenizer, verify, then write the text manifest."""
    name = f"{args.name or ARCHS['clip'].default_name}-text"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / f"{name}.onnx"
    tokenizer_path = out / f"{name}.{TOKENIZER_FILE}"
    if args.random_tiny:
        # The tokenizer of blindspot's tiny encoders: CLIP's components, a small vocabulary.
        from make_tiny_encoders import COLOUR_NAMES, EOT, SOT, STATEMENT_WORDS, tiny_tokenizer

        tokenizer = tiny_tokenizer([*COLOUR_NAMES, *STATEMENT_WORDS])
        tokenizer.save(str(tokenizer_path), pretty=True)
        pad = EOT
        torch.manual_seed(SEED)
        model = tiny_clip_text(tokenizer.get_vocab_size(), tokenizer.token_to_id(SOT), tokenizer.token_to_id(EOT))
        source = f"--random-tiny (random weights, seed {SEED}; NOT a trained encoder)"
    else:
        model = load_text_model(args.model)
        pad = save_tokenizer(args.model, tokenizer_path)
        source = args.model
    model.eval()
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    pad_id = tokenizer.token_to_id(pad)
    if pad_id is None:
        sys.exit(f"the pad token {pad!r} is not in {tokenizer_path}")
    config = model.config.text_config if isinstance(model, CLIPModel) else model.config
    context_length = config.max_position_embeddings
    module = ClipTextEmbeds(model).eval()

    exported = copy.deepcopy(module).half() if args.fp16 else module
    export_text_onnx(exported, context_length, config.vocab_size, onnx_path, args.opset)
    verify_text(module, onnx_path, text_batches(tokenizer, pad_id, context_length), args.fp16, module.dim)
    comments = [
        f"{type(model).__name__} text tower exported from {source}"
        + (" (float16 weights)" if args.fp16 else ""),
        f"Generated by: {shlex.join([Path(sys.executable).name, *sys.argv])}",
    ]
    fields = {
        "id": name,
        "onnx": onnx_path.name,
        "tokenizer": tokenizer_path.name,
        "input-ids": TEXT_INPUTS[0],
        "attention-mask": TEXT_INPUTS[1],
        "output": TEXT_OUTPUT,
        "dim": module.dim,
        "context-length": context_length,
        "pad-token": pad,
    }
    if isinstance(model, CLIPModel):
        # The scale MMVP-VLM's softmax over two images uses (100 for OpenAI's trained CLIPs).
        fields["logit-scale"] = round(float(model.logit_scale.exp()), 6)
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
    common.add_argument(
        "--name", help="encoder id and file stem (default: clip-vit-l-14 / dinov2-vit-l-14; clip-text adds -text)"
    )
    common.add_argument(
        "--fp16", action="store_true", help="export in half precision (float16 input, float32 output)"
    )
    common.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="arch", required=True)
    sub.add_parser("clip", parents=[common], help="CLIP vision tower + projection -> image_embeds")
    sub.add_parser("dino", parents=[common], help="DINOv2 backbone -> cls")
    sub.add_parser(
        "clip-text", parents=[common], help="CLIP text tower + projection -> text_embeds, with its tokenizer"
    )
    args = parser.parse_args()
    if args.arch == "clip-text":
        run_text(args)
    else:
        run(args)


if __name__ == "__main__":
    main()

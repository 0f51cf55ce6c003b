"""``emotion-export``: checkpoint (or the bundled default model) → validated, self-describing ONNX file.

Exit codes: 0 success; 1 export or validation failed (the bad file is removed); 2 bad command line, or a
checkpoint that is missing, corrupt or does not fit this code. Every failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from emotion_monitor.realtime.errors import one_line, print_error
from emotion_monitor.realtime.metadata import DEFAULT_HOP_S, ModelInfo

INT8_VARIANTS = {"int8": "dynamic", "int8-per-channel": "dynamic-per-channel", "int8-blockwise": "blockwise"}
"""``--quantize`` choice → ``emotion_monitor.export.quantize.quantize_int8`` method."""
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

DESCRIPTION = """\
Export a trained speech-emotion classifier to ONNX for the live monitor (emotion-live) and batch scoring
(emotion-score), which run it with ONNX Runtime and no PyTorch.

The ONNX file takes raw 16 kHz mono audio, float32 [batch, samples] of any length, and returns "logits"
and "probs" [batch, classes]. Labels, sample rate, training window, suggested hop, preprocessing and the
training metrics are stored inside the file, so the runtime needs nothing else.

Every export is checked: onnx.checker, then ONNX Runtime against PyTorch on real RAVDESS speech
($EMOTION_DATA_DIR, see docs/training.md; synthetic speech-like audio with a notice when absent) at
0.5 s to 10 s and batch sizes 1 and 3. If the largest probability difference exceeds 1e-4, the export
fails and the file is deleted.
"""

EPILOG = """\
examples:
  emotion-export runs/best.ckpt -o model.onnx          export a checkpoint from emotion-train
  emotion-export -o model.onnx                         export the bundled default model
  emotion-export runs/best.ckpt -o model.onnx --quantize int8
                                                       also write model.int8.onnx (smaller; its speed
                                                       against fp32 on this machine is printed)
  emotion-export runs/best.ckpt -o model.onnx --fp16   also write model.fp16.onnx (for CUDA)
  emotion-export --heads heads-4layers -o model-4layers.onnx
                                                       heads trained on the first 4 encoder layers
                                                       (emotion-train experiment=head task=bundle
                                                       model.backbone.num_layers=4 bundle_dir=heads-4layers):
                                                       the encoder runs those 4 layers only

exit codes: 0 ok, 1 export/validation failed, 2 bad arguments or unusable checkpoint
"""


class CliError(Exception):
    """A failure reported as one line; ``code`` is the process exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-export",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint",
        nargs="?",
        type=Path,
        help="emotion-train checkpoint (.ckpt); omit it to export the bundled default model",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("model.onnx"),
        help="ONNX file to write (default: model.onnx)",
    )
    parser.add_argument(
        "--quantize",
        choices=list(INT8_VARIANTS),
        help="also write an int8 copy (<output>.int8.onnx) of the transformer matmuls, smaller than fp32; "
        "its agreement with fp32 and its speed against fp32 on this machine are printed, with a notice when "
        "it is not faster here (whether int8 pays depends on the CPU; sizes and speeds measured so far are "
        "in docs/benchmarks.md). int8: onnxruntime dynamic quantisation of the layers' matmuls "
        "except the feed-forward outputs, one weight scale per tensor; int8-per-channel: one weight scale "
        "per channel; int8-blockwise: one weight scale per 32 weights",
    )
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="also write a float16 copy (<output>.fp16.onnx) for GPUs; inputs/outputs stay float32",
    )
    parser.add_argument(
        "--heads",
        type=Path,
        metavar="DIR",
        help="without a checkpoint: heads written by 'emotion-train experiment=head task=bundle bundle_dir=DIR' "
        "(default: the bundled ones), on the installed Whisper-base encoder cut to the heads' encoder_layers "
        "(model.json; e.g. 4 of 6 after 'task=bundle model.backbone.num_layers=4'), stated in the metadata",
    )
    parser.add_argument(
        "--time-pooling",
        choices=["mean", "mean_std"],
        help="without a checkpoint: the statistics over time of each layer that the 'pooled' output carries "
        "(default: the heads'). Other statistics than the heads' give a features-only file with an untrained "
        "head, for 'python -m emotion_monitor.core.window_features --model FILE' (comparing feature variants), not for use",
    )
    parser.add_argument(
        "--encoder",
        metavar="WEIGHTS",
        help="without a checkpoint: another installed Whisper encoder (whisper-tiny.en; default: the heads' "
        "whisper-base), all its layers, under an untrained head: a features-only file like --time-pooling's, for "
        "comparing encoders under the evaluation protocol",
    )
    parser.add_argument(
        "--hop",
        type=float,
        metavar="SECONDS",
        help=f"suggested hop between live windows stored in the metadata (default: {DEFAULT_HOP_S}, or the "
        "bundled model's own)",
    )
    parser.add_argument(
        "--opset", type=int, default=17, help="ONNX opset, 17 or newer (default: 17, ONNX Runtime >= 1.14)"
    )
    parser.add_argument(
        "--clips",
        type=int,
        default=48,
        metavar="N",
        help="RAVDESS clips used for the checks (default: 48; fixed selection, same on every run)",
    )
    return parser


def plain(value: Any) -> Any:
    """Checkpoint hparams → JSON-safe data (tensors and numpy scalars become numbers or lists)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # torch.Tensor, numpy array or scalar
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def describe_backbone(spec: dict[str, Any]) -> str:
    """``kind:name_or_path (N layers, hidden H)``; ``kind:custom`` for a backbone defined only by its config."""
    backbone = spec.get("backbone", {})
    config = backbone.get("config") or {}
    text = f"{backbone.get('kind', 'unknown')}:{backbone.get('name_or_path') or 'custom'}"
    layers = config.get("num_hidden_layers", config.get("encoder_layers"))
    hidden = config.get("hidden_size", config.get("d_model"))
    return f"{text} ({layers} layers, hidden {hidden})" if layers and hidden else text


def describe_split(split: dict[str, Any]) -> str:
    """emotion-train's ``split`` hparam in words: which actors trained, validated and tested the model."""
    actors = split.get("actors")
    if not isinstance(actors, dict):
        return "split: " + json.dumps(plain(split), sort_keys=True)
    sets = "; ".join(f"{name} actors {', '.join(map(str, ids))}" for name, ids in actors.items())
    text = f"speaker-independent split by RAVDESS actor: {sets}"
    if split.get("fold") is not None:
        text += f" (fold {split['fold']} of {split.get('num_folds')})"
    return text + "; metric names give the set they were measured on"


def info_from_hparams(hparams: dict[str, Any], hop_s: float) -> ModelInfo:
    """ModelInfo from emotion-train ``hyper_parameters`` (see core.checkpoint for the format)."""
    metrics = plain(hparams.get("metrics") or {})
    protocol = hparams.get("protocol") or (metrics.get("protocol") if isinstance(metrics, dict) else None)
    if not protocol and isinstance(hparams.get("split"), dict):
        protocol = describe_split(hparams["split"])
    return ModelInfo(
        labels=tuple(str(label) for label in hparams["labels"]),
        sample_rate=int(hparams["sample_rate"]),
        window_s=float(hparams["window_s"]),
        hop_s=hop_s,
        backbone=describe_backbone(hparams["model_spec"]),
        preprocessing=plain(hparams["preprocessing"]),
        metrics=metrics if isinstance(metrics, dict) else {"value": metrics},
        protocol=str(protocol or ""),
    )


def load_checkpoint_model(path: Path, hop_s: float):
    """``(model, ModelInfo)`` from an emotion-train checkpoint; CliError(code 2) when it cannot be used."""
    from emotion_monitor.core.checkpoint import CheckpointError, load_classifier

    try:
        model, hparams = load_classifier(path)
        return model, info_from_hparams(hparams, hop_s)
    except CheckpointError as exc:
        raise CliError(f"cannot use checkpoint {exc}", EXIT_BAD_INPUT) from None
    except Exception as exc:  # e.g. load_state_dict's multi-line RuntimeError for a weight shape mismatch
        reason = f"does not fit this code ({one_line(exc, with_type=True)})"
        raise CliError(f"cannot use checkpoint {path}: {reason}", EXIT_BAD_INPUT) from None


def load_default_model(
    hop_s: float | None,
    heads_dir: Path | None = None,
    time_pooling: str | None = None,
    encoder: str | None = None,
):
    """``(model, ModelInfo, speaker heads by kind)`` of the bundled default model (``emotion_monitor.export.default_model``),
    or of the heads in ``heads_dir`` on the same encoder; imported lazily. ``time_pooling`` other than the heads'
    or another ``encoder``: a features-only model (untrained head, no speaker heads)."""
    try:
        from emotion_monitor.export.default_model import (
            BUNDLE_DIR,
            FEATURES_ONLY_PROTOCOL,
            build_default_classifier,
            build_speaker_heads,
        )
    except ModuleNotFoundError as exc:
        if exc.name not in ("emotion_monitor.export.default_model", "export"):
            raise CliError(f"the bundled default model needs the missing package {exc.name!r}") from None
        raise CliError(
            "no checkpoint given and the bundled default model (export/default_model.py) is not available "
            "in this installation; pass an emotion-train checkpoint",
            EXIT_BAD_INPUT,
        ) from None
    try:
        bundle_dir = heads_dir or BUNDLE_DIR
        model, info = build_default_classifier(bundle_dir, time_pooling, encoder)
        backbone = model.backbone
        heads = {}
        if info.protocol != FEATURES_ONLY_PROTOCOL:
            heads = build_speaker_heads(
                bundle_dir, hidden_size=backbone.hidden_size, num_layers=backbone.num_layers
            )
    except Exception as exc:  # missing weights package, changed layout...: report, do not dump a traceback
        raise CliError(f"cannot build the bundled default model: {one_line(exc, with_type=True)}") from None
    return model, (info if hop_s is None else dataclasses.replace(info, hop_s=hop_s)), heads


def check_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Reject values argparse cannot: exits with code 2 and a one-line usage error."""
    if args.opset < 17:
        parser.error(f"--opset {args.opset}: 17 or newer is required")
    if args.hop is not None and args.hop <= 0:
        parser.error(f"--hop {args.hop}: must be a positive number of seconds")
    if args.clips < 1:
        parser.error(f"--clips {args.clips}: must be at least 1")
    if args.output.suffix != ".onnx":
        parser.error(f"--output {args.output}: the file name must end in .onnx")


def variant_path(output: Path, variant: str) -> Path:
    """``model.onnx`` → ``model.int8.onnx`` (``variant`` ``int8``)."""
    return output.with_suffix(f".{variant}.onnx")


def megabytes(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def run(args: argparse.Namespace) -> None:
    """Load, export, validate, and write the requested variants; raises CliError on any failure."""
    from emotion_monitor.export import validate
    from emotion_monitor.export.onnx_export import ExportError, export_onnx

    source = str(args.checkpoint or args.heads or "the bundled default model")
    heads = {}
    if args.checkpoint and (args.heads or args.time_pooling or args.encoder):
        raise CliError("--heads, --time-pooling and --encoder go without a checkpoint", EXIT_BAD_INPUT)
    print(f"loading {source} ...", flush=True)
    if args.checkpoint:
        model, info = load_checkpoint_model(args.checkpoint, args.hop or DEFAULT_HOP_S)
    else:
        model, info, heads = load_default_model(args.hop, args.heads, args.time_pooling, args.encoder)
    print(f"exporting {source}: {info.backbone}, {len(info.labels)} labels ({', '.join(info.labels)})")
    try:
        path = export_onnx(model, info, args.output, opset=args.opset, speaker_heads=heads)
    except ExportError as exc:
        raise CliError(str(exc)) from None
    print(f"onnx.checker: ok ({path}, {megabytes(path)}, opset {args.opset})")

    audio = validate.load_validation_audio(info, args.clips)
    print(f"validation audio: {audio.source}")
    try:
        worst = validate.check_parity(model, path, info, audio)
    except Exception as exc:  # ValidationError, or ONNX Runtime refusing the file: either way it is bad
        path.unlink(missing_ok=True)
        message = str(exc) if isinstance(exc, validate.ValidationError) else one_line(exc, with_type=True)
        raise CliError(f"{message}; removed {path}") from None
    print(f"ONNX Runtime vs PyTorch: max |Δprobs| = {worst:.2e} (limit {validate.PARITY_TOLERANCE:g}): ok")
    for kind, head in heads.items():
        try:
            worst = validate.check_speaker_norm_parity(model, head, path, info, audio, kind)
        except validate.ValidationError as exc:
            path.unlink(missing_ok=True)
            raise CliError(f"{exc}; removed {path}") from None
        print(f"speaker head ({kind}), ONNX Runtime vs PyTorch: max |Δprobs| = {worst:.2e}: ok")

    if args.quantize:
        write_variant(path, args.quantize, info, audio)
    if args.fp16:
        write_variant(path, "fp16", info, audio)
    print(f"wrote {path}")


def write_variant(path: Path, variant: str, info: ModelInfo, audio) -> Path:
    """Write the int8 or fp16 copy of ``path``, check it against fp32 on the clips, print the agreement."""
    from emotion_monitor.export import quantize, validate

    target = variant_path(path, variant.split("-")[0])
    try:
        if variant == "fp16":
            quantize.convert_fp16(path, target)
        else:
            quantize.quantize_int8(path, target, method=INT8_VARIANTS[variant])
        result = validate.agreement(validate.cpu_session(path), validate.cpu_session(target), info, audio)
        speed = None if variant == "fp16" else quantize.speed_check(path, target)
    except Exception as exc:
        target.unlink(missing_ok=True)
        raise CliError(f"{variant} variant failed: {one_line(exc, with_type=True)}") from None
    print(result.describe(variant))
    if speed is not None:  # int8 pays only on some CPUs: say what it does on this one
        print(speed.describe(variant))
    print(f"wrote {target} ({megabytes(target)}, fp32 {megabytes(path)})")
    if result.worst_top1 < 0.9:
        print(
            f"warning: the {variant} model changes the top label on {1 - result.worst_top1:.0%} of clips or "
            "windows; prefer fp32"
        )
    return target


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (the console-script wrapper passes it to sys.exit)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(args, parser)
    try:
        run(args)
    except CliError as exc:
        return print_error("emotion-export", exc, exc.code)
    return 0

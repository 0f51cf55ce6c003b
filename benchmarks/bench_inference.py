"""Inference cost per window: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, measured side by side.

Prints one JSON document. Times are medians over interleaved repeats (each round runs every variant once,
so a burst of load on this shared machine hits all variants alike); compare the ratios, not the absolute ms.

Usage:
    python benchmarks/bench_inference.py                       # bundled model and a wav2vec2-base-sized one
    python benchmarks/bench_inference.py --models wav2vec2-base --windows 2 3 --repeats 30
    python benchmarks/bench_inference.py --files model.onnx model-4layers.onnx --windows 3   # exported files
    python benchmarks/bench_inference.py --files model.onnx --windows 3 --profile 8   # time per operator type
"""

from __future__ import annotations

import os

# Idle OpenMP threads of the torch variant sleep instead of spinning into the next variant's time (as ONNX Runtime's
# do in the runtime); must be set before torch loads its OpenMP library.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import collections
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from emotion_monitor.core.backbones import build_backbone
from emotion_monitor.core.emotions import EMOTIONS
from emotion_monitor.core.model import EmotionClassifier
from emotion_monitor.export.onnx_export import export_onnx
from emotion_monitor.export.quantize import cpu_flags, quantize_int8
from emotion_monitor.realtime.audio import SAMPLE_RATE
from emotion_monitor.realtime.metadata import ModelInfo
from emotion_monitor.realtime.model import EmotionModel, ModelOptions
from emotion_monitor.realtime.providers import session_options

LABELS = EMOTIONS


def wav2vec2_base_sized() -> tuple[torch.nn.Module, ModelInfo]:
    """wav2vec2-base architecture (transformers' default config: 12 layers, 768 wide), random weights.

    Cost per window does not depend on the weights' values, so this measures what a user fine-tuning
    ``facebook/wav2vec2-base`` would run, without a download.
    """
    backbone = build_backbone("wav2vec2", None, config={})
    model = EmotionClassifier(backbone, len(LABELS)).eval()
    return model, ModelInfo(labels=LABELS, backbone="wav2vec2-base (random weights, timing only)")


def bundled() -> tuple[torch.nn.Module, ModelInfo]:
    from emotion_monitor.export.default_model import build_default_classifier

    model, info = build_default_classifier()
    return model.eval(), info


MODELS = {"bundled": bundled, "wav2vec2-base": wav2vec2_base_sized}


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    """The session exactly as the runtime opens it (``emotion_monitor.realtime.model``: idle threads sleep instead of spinning;
    spinning threads of one variant would steal the cores the next variant runs on, and every other process's)."""
    return EmotionModel(path, ModelOptions("cpu", threads)).session


def time_call(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return (time.perf_counter() - start) * 1000.0


def bench_model(name: str, windows_s: list[float], repeats: int, threads: int, workdir: Path) -> dict:
    model, info = MODELS[name]()
    fp32 = export_onnx(model, info, workdir / f"{name}.onnx")
    int8 = quantize_int8(fp32, workdir / f"{name}.int8.onnx")
    int8_pc = quantize_int8(fp32, workdir / f"{name}.int8pc.onnx", method="dynamic-per-channel")
    sessions = {
        "onnx_fp32": ort_session(fp32, threads),
        "onnx_int8": ort_session(int8, threads),
        "onnx_int8_per_channel": ort_session(int8_pc, threads),
    }

    def torch_run(x: np.ndarray) -> None:
        with torch.inference_mode():
            model(torch.from_numpy(x))

    variants = {"torch_eager": torch_run}
    for key, session in sessions.items():
        variants[key] = lambda x, s=session: s.run(None, {"input_values": x})

    rng = np.random.default_rng(0)
    results = {}
    for window_s in windows_s:
        x = (0.1 * rng.standard_normal((1, int(window_s * SAMPLE_RATE)))).astype(np.float32)
        for fn in variants.values():  # warm-up: first runs allocate and pick kernels
            fn(x)
        times = {key: [] for key in variants}
        for _ in range(repeats):
            for key, fn in variants.items():
                times[key].append(time_call(fn, x))
        median = {key: statistics.median(v) for key, v in times.items()}
        results[f"{window_s:g}s"] = {
            key: {
                "median_ms": round(median[key], 2),
                "p90_ms": round(float(np.percentile(times[key], 90)), 2),
                "real_time_factor": round(median[key] / (window_s * 1000.0), 4),
                "speedup_vs_torch": round(median["torch_eager"] / median[key], 2),
                "speedup_vs_onnx_fp32": round(median["onnx_fp32"] / median[key], 2),
            }
            for key in variants
        }
    sizes = {"onnx_fp32_mb": fp32.stat().st_size / 1e6, "onnx_int8_mb": int8.stat().st_size / 1e6}
    sizes["onnx_int8_per_channel_mb"] = int8_pc.stat().st_size / 1e6
    return {"backbone": info.backbone, "windows": results, **{k: round(v, 1) for k, v in sizes.items()}}


def bench_files(paths: list[Path], windows_s: list[float], repeats: int, threads: int) -> dict:
    """ONNX files as the runtime runs them, interleaved per round; each file's median ms per window and its
    time relative to the first file's."""
    models = {str(p): EmotionModel(p, ModelOptions("cpu", threads)) for p in paths}
    rng = np.random.default_rng(0)
    results = {}
    for window_s in windows_s:
        x = (0.1 * rng.standard_normal(int(window_s * SAMPLE_RATE))).astype(np.float32)
        for model in models.values():  # warm-up
            model.score_windows([x])
        times = {key: [] for key in models}
        for _ in range(repeats):
            for key, model in models.items():
                times[key].append(time_call(lambda w, m=model: m.score_windows([w]), x))
        median = {key: statistics.median(v) for key, v in times.items()}
        first = median[str(paths[0])]
        results[f"{window_s:g}s"] = {
            key: {
                "median_ms": round(median[key], 2),
                "p90_ms": round(float(np.percentile(times[key], 90)), 2),
                "time_vs_first": round(median[key] / first, 3),
            }
            for key in models
        }
    return {
        "files": {
            key: {"backbone": m.info.backbone, "encoder_layers": m.info.encoder_layers, "variant": m.variant}
            for key, m in models.items()
        },
        "windows": results,
    }


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """The machine's practical matrix-product rate: one ``n``×``n`` float32 MatMul in ONNX Runtime with the runtime's
    session settings, best of ``repeats`` (GFLOP/s). The yardstick for how close the encoder runs to the floor."""
    import onnx
    from onnx import TensorProto, helper

    tensors = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in "abc"]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul", tensors[:2], tensors[2:]
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    session = ort.InferenceSession(
        proto.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    feeds = {name: rng.random((n, n), dtype=np.float32) for name in "ab"}
    session.run(None, feeds)
    best = min(time_call(lambda f: session.run(None, f), feeds) for _ in range(repeats))
    return 2.0 * n**3 / (best / 1000.0) / 1e9


def profile_files(paths: list[Path], windows_s: list[float], batch: int, repeats: int, threads: int) -> dict:
    """Where the time goes: ONNX Runtime's own profiler over ``repeats`` runs of ``batch`` equal windows (runtime
    session settings), each operator type's share of the node time, and the ms per window of the profiled runs."""
    rng = np.random.default_rng(0)
    results = {}
    for path in paths:
        for window_s in windows_s:
            so = session_options(threads)
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tempfile.gettempdir()) / "bench_inference_profile")
            session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            x = (0.1 * rng.standard_normal((batch, int(window_s * SAMPLE_RATE)))).astype(np.float32)
            output = session.get_outputs()[0].name
            session.run([output], {"input_values": x})  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                session.run([output], {"input_values": x})
            per_window_ms = (time.perf_counter() - start) * 1000.0 / (repeats * batch)
            trace = Path(session.end_profiling())
            by_op: collections.Counter = collections.Counter()
            for event in json.loads(trace.read_text()):
                if event.get("cat") == "Node":
                    by_op[event["args"].get("op_name", "?")] += event["dur"]
            trace.unlink()
            total = sum(by_op.values()) or 1
            results[f"{path} {window_s:g}s"] = {
                "per_window_ms_while_profiling": round(per_window_ms, 1),
                "op_share_percent": {op: round(100.0 * us / total, 1) for op, us in by_op.most_common(12)},
            }
    return {"batch": batch, "matmul_2048_gflops": round(matmul_gflops(threads), 1), "profiles": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--windows", nargs="+", type=float, default=[2.0, 3.0], help="window lengths, seconds"
    )
    parser.add_argument("--repeats", type=int, default=20, help="interleaved timing rounds per window")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and ORT alike")
    parser.add_argument(
        "--files", nargs="+", type=Path, help="time these exported ONNX files instead (ONNX Runtime only)"
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="BATCH",
        help="with --files: ONNX Runtime's per-operator profile over batches of BATCH windows",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    report = {
        "benchmark": "inference_per_window",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, onnxruntime {ort.__version__}, "
        f"torch {torch.__version__}, CPU flags: {cpu_flags()}",
        "batch": 1,
    }
    if args.files and args.profile:
        report.update(profile_files(args.files, args.windows, args.profile, args.repeats, args.threads))
    elif args.files:
        report.update(bench_files(args.files, args.windows, args.repeats, args.threads))
    else:
        report["models"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.models:
                try:
                    report["models"][name] = bench_model(
                        name, args.windows, args.repeats, args.threads, Path(tmp)
                    )
                except Exception as exc:  # a missing bundled model must not hide the other figures
                    report["models"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

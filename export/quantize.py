"""Smaller/faster variants of an fp32 export: dynamic int8 (CPU) and float16 (GPU).

Both keep the fp32 model's interface (float32 ``input_values`` in, float32 ``logits``/``probs`` out) and its
``emotion.*`` metadata, plus ``emotion.variant`` (``int8`` or ``fp16``); ``ModelInfo.from_metadata`` ignores
that extra key, so the runtime reads a variant exactly like the fp32 file.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from emotion_monitor.realtime.metadata import VARIANT_KEY

QUANTIZED_OPS = ("MatMul", "Gemm")
"""Only weight matmuls are quantised: they hold nearly all weights and time. Convolutions (the wav2vec2
feature encoder, Whisper's stem) are left in float: ``ConvInteger`` is slow on CPU and the early layers are
the most sensitive to quantisation noise."""
TRANSFORMER_LAYER_MARK = "/layers."
"""Substring of the exported node names inside transformer blocks (``.../encoder/layers.3/...``)."""
FP16_KEEP_FLOAT32 = ("DFT", "STFT", "Log", "Exp", "Pow", "Sqrt", "ReduceMean", "ReduceSum", "CumSum", "Range")
"""Ops kept in float32 by the fp16 conversion: the waveform normalisation (sums over up to 160 000 samples
overflow fp16) and a log-mel front end (DFT, log of small energies) lose too much precision in half floats."""


def copy_metadata(source: onnx.ModelProto, target: onnx.ModelProto, variant: str) -> None:
    """``target.metadata_props`` := ``source``'s, plus ``emotion.variant``."""
    del target.metadata_props[:]
    for prop in source.metadata_props:
        if prop.key != VARIANT_KEY:
            target.metadata_props.add(key=prop.key, value=prop.value)
    target.metadata_props.add(key=VARIANT_KEY, value=json.dumps(variant))
    target.producer_name, target.producer_version = source.producer_name, source.producer_version
    target.doc_string = f"{source.doc_string} [{variant}]".strip()


FFN_OUTPUT_MARKS = ("/fc2/", "/output_dense/")
"""Node-name parts of each layer's feed-forward output projection (Whisper ``fc2``, wav2vec2 ``output_dense``),
kept in float. Its input, the GELU output, has outlier channels that one activation scale per tensor cannot
follow: with every layer matmul in int8 the top label changes on many continuous-speech windows while whole
clips still agree (docs/benchmarks.md, 7d, has the measurements)."""


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul/Gemm nodes inside transformer layers, except the feed-forward output projections.

    Excluded on purpose: the front end (a Whisper mel filterbank is a MatMul whose error the log amplifies),
    the feature projection, the classifier head after pooling — tiny, and right at the decision — and each
    layer's feed-forward output (``FFN_OUTPUT_MARKS``). Falls back to every MatMul/Gemm outside the head when no
    node carries the layer mark.
    """
    matmuls = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.name]
    matmuls = [name for name in matmuls if not any(mark in name for mark in FFN_OUTPUT_MARKS)]
    layers = [name for name in matmuls if TRANSFORMER_LAYER_MARK in name]
    return layers or [name for name in matmuls if "/head/" not in name and "/features/" not in name]


def _preprocess(source: Path, work: Path) -> Path:
    """ORT's ``quant_pre_process`` (shape inference + graph optimisation); the input itself when it fails."""
    from onnxruntime.quantization import quant_pre_process

    target = work / "preprocessed.onnx"
    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    except Exception:  # an optional step: quantisation works without it, only the graph is less tidy
        return source
    return target


INT8_METHODS = ("dynamic", "dynamic-per-channel", "blockwise")
BLOCK_SIZE = 32
"""Weights per int8 scale in ``blockwise`` quantisation: finer blocks follow outlier weights more closely."""


def quantize_int8(source: str | Path, target: str | Path, method: str = "dynamic") -> Path:
    """int8 copy of ``source`` (fp32 export) in ``target``; only transformer-layer weight matmuls change.

    method:
      ``dynamic`` (default): ``quantize_dynamic`` (``MatMulInteger``, standard ONNX ops): int8 weights with one
        scale per tensor, uint8 activations with one scale per tensor computed per run.
      ``dynamic-per-channel``: the same with one weight scale per output channel.
      ``blockwise``: ``MatMulNBits`` with 8-bit symmetric weights, one scale per ``BLOCK_SIZE`` weights,
        ``accuracy_level=4`` (int8 activations per block). Same size. A contrib op: ONNX Runtime only.
    None needs calibration data. The feed-forward outputs stay float (``FFN_OUTPUT_MARKS``). Sizes, speeds and
    agreement with fp32 of each method (and of static QDQ, which was tried) are in docs/benchmarks.md
    (1b, 7). Whether int8 pays depends on the CPU: ``speed_check`` measures it on this one.
    """
    if method not in INT8_METHODS:
        raise ValueError(f"unknown int8 method {method!r}; expected one of {INT8_METHODS}")
    source, target = Path(source), Path(target)
    if method == "blockwise":
        _quantize_blockwise(source, target)
    else:
        _quantize_dynamic(source, target, per_channel=method == "dynamic-per-channel")
    _finish(source, target, "int8" if method == "dynamic" else f"int8-{method}")
    return target


def _quantize_blockwise(source: Path, target: Path) -> None:
    """8-bit ``MatMulNBits`` weights (see ``quantize_int8``)."""
    root_level = logging.getLogger().level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # Importing it calls logging.basicConfig(level=INFO) and it logs one line per graph node: keep the
    # root logger as it was and the quantizer to warnings.
    logging.getLogger().setLevel(root_level)
    logging.getLogger(MatMulNBitsQuantizer.__module__).setLevel(logging.WARNING)
    model = onnx.load(str(source))
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=8,
        block_size=BLOCK_SIZE,
        is_symmetric=True,
        accuracy_level=4,
        nodes_to_include=quantizable_nodes(model),
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


def _quantize_dynamic(source: Path, target: Path, per_channel: bool = False) -> None:
    """``quantize_dynamic`` on the ``quant_pre_process``-ed graph; weight × activation matmuls only."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        prepared = _preprocess(source, Path(tmp))
        quantize_dynamic(
            str(prepared),
            str(target),
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_quantize=quantizable_nodes(onnx.load(str(prepared), load_external_data=False)) or None,
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            # Attention score matmuls (both inputs are activations) stay float.
            extra_options={"MatMulConstBOnly": True},
        )


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
"""CPU flags that decide whether int8 matmuls beat float32 ones (VNNI/AMX: int8 dot products in one instruction)."""
MIN_SPEEDUP = 1.05
"""An int8 model counts as faster than fp32 only when it takes at most 1/1.05 of fp32's time per window."""


def cpu_flags() -> str:
    """The CPU's SIMD flags among ``SIMD_FLAGS`` (from /proc/cpuinfo), e.g. ``avx2 fma``; the machine type elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return " ".join(f for f in SIMD_FLAGS if f in flags) or "no AVX2"
    return platform.machine() or "unknown CPU"


@dataclass(frozen=True)
class SpeedCheck:
    """fp32 vs a variant on this machine: median ms per ``window_s`` window, interleaved rounds."""

    window_s: float
    threads: int
    fp32_ms: float
    variant_ms: float
    cpu: str

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.variant_ms

    @property
    def faster(self) -> bool:
        return self.speedup >= MIN_SPEEDUP

    def describe(self, variant: str) -> str:
        figures = (
            f"{self.variant_ms:.0f} ms vs fp32 {self.fp32_ms:.0f} ms per {self.window_s:g} s window "
            f"({self.speedup:.2f}x, {self.threads} threads, CPU flags: {self.cpu})"
        )
        if self.faster:
            return f"{variant} speed on this machine: {figures}"
        return (
            f"notice: {variant} is not faster than fp32 on this machine: {figures}; it is written for its size "
            "only, use the fp32 model for speed"
        )


def speed_check(
    fp32: str | Path, variant: str | Path, window_s: float = 3.0, rounds: int = 7, threads: int | None = None
) -> SpeedCheck:
    """Time ``variant`` against ``fp32`` on this machine as the runtime runs them (``emotion_monitor.realtime.model`` sessions),
    one window at a time, alternating the two models each round so a burst of load hits both alike."""
    from emotion_monitor.realtime.model import EmotionModel, ModelOptions
    from emotion_monitor.realtime.providers import default_intra_op_threads

    threads = threads or default_intra_op_threads()
    models = [EmotionModel(path, ModelOptions("cpu", threads)) for path in (fp32, variant)]
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(round(window_s * models[0].sample_rate))).astype(np.float32)
    times: list[list[float]] = [[], []]
    for model in models:  # warm-up: the first run allocates and picks kernels
        model.score_windows([x])
    for _ in range(rounds):
        for model, spent in zip(models, times, strict=True):
            start = time.perf_counter()
            model.score_windows([x])
            spent.append((time.perf_counter() - start) * 1000.0)
    fp32_ms, variant_ms = (statistics.median(t) for t in times)
    return SpeedCheck(window_s, threads, fp32_ms, variant_ms, cpu_flags())


def _float16_converter():
    """``convert_float_to_float16`` from onnxconverter-common when installed, else ONNX Runtime's copy of it."""
    try:
        from onnxconverter_common.float16 import convert_float_to_float16
    except ImportError:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    return convert_float_to_float16


def convert_fp16(source: str | Path, target: str | Path) -> Path:
    """Float16 weights and compute (for CUDA), float32 inputs/outputs and precision-sensitive ops."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    source, target = Path(source), Path(target)
    model = onnx.load(str(source))
    converted = _float16_converter()(
        model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP16_KEEP_FLOAT32)
    )
    _sort_nodes(converted.graph)
    onnx.save(converted, str(target))
    _finish(source, target, "fp16")
    return target


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Topologically sort ``graph.node`` in place.

    With ``keep_io_types`` the converter appends the input casts after nodes that already read them when the
    first consumer of an input is a blocked (float32) op; ONNX requires producers before consumers.
    """
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:  # a cycle or a dangling input: leave the order alone and let the checker report it
            return
        for node in ready:
            available.update(node.output)
        ordered += ready
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    del graph.node[:]
    graph.node.extend(ordered)


def _finish(source: Path, target: Path, variant: str) -> None:
    """Copy the metadata over and run the checker; a file that fails is removed."""
    try:
        model = onnx.load(str(target))
        copy_metadata(onnx.load(str(source), load_external_data=False), model, variant)
        onnx.save(model, str(target))
        onnx.checker.check_model(str(target))
    except Exception:
        target.unlink(missing_ok=True)
        raise

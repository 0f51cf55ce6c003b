"""Smaller/faster variants of an fp32 export: dynamic int8 (CPU) and float16 (GPU).

Both keep the fp32 model's interface (float32 ``input_values`` in, float32 ``logits``/``probs`` out) and its
``emotion.*`` metadata, plus ``emotion.variant`` (``int8`` or ``fp16``); ``ModelInfo.from_metadata`` ignores
that extra key, so the runtime reads a variant exactly like the fp32 file.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import onnx

VARIANT_KEY = "emotion.variant"
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


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul/Gemm nodes inside transformer layers.

    Excluded on purpose: the front end (a Whisper mel filterbank is a MatMul whose error the log amplifies),
    the feature projection, and the classifier head after pooling — tiny, and right at the decision.
    Falls back to every MatMul/Gemm outside the head when no node carries the layer mark.
    """
    matmuls = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.name]
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


def quantize_int8(
    source: str | Path, target: str | Path, per_channel: bool = True, preprocess: bool = True
) -> Path:
    """Dynamic int8 quantisation of ``source`` (fp32 export) into ``target``.

    Weights are int8 (per output channel when ``per_channel``: less error, same speed); activations are
    quantised on the fly per batch, so no calibration data is needed. Only weight×activation matmuls are
    converted (``MatMulConstBOnly``): attention score matmuls stay float.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = Path(source), Path(target)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = _preprocess(source, Path(tmp)) if preprocess else source
        quantize_dynamic(
            str(prepared),
            str(target),
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_quantize=quantizable_nodes(onnx.load(str(prepared), load_external_data=False)) or None,
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        )
    _finish(source, target, "int8")
    return target


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

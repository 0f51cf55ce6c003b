"""``emotion-export`` end to end: a hand-built emotion-train checkpoint → validated ONNX (+ int8), and errors."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from support import LABELS, tiny_classifier

from emotion_monitor.export import cli, validate
from emotion_monitor.realtime.audio import PreprocessOptions
from emotion_monitor.realtime.metadata import (
    INPUT_NAME,
    PROBS_NAME,
    SPEAKER_BASELINE_HEAD_KEY,
    SPEAKER_NORM_HEAD_KEY,
    ModelInfo,
)

CLIPS = ["--clips", "4"]
"""Few validation clips: the parity check still covers every length and batch size."""


def write_lightning_checkpoint(path, model, **overrides):
    """A checkpoint in the emotion-train format, written by hand from the contract (not via core.checkpoint)."""
    hparams = {
        "model_spec": model.spec(),
        "labels": list(LABELS),
        "sample_rate": 16_000,
        "window_s": 2.5,
        "preprocessing": PreprocessOptions().to_dict(),
        "metrics": {"accuracy": torch.tensor(0.61), "macro_f1": 0.58},
        "split": {"actors": {"train": [1, 2, 3], "val": [4]}, "fold": None},
    } | overrides
    state = {"model." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hparams, "epoch": 3}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_lightning_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "best.ckpt", tiny_classifier(seed=3, perturb=True)
    )


def _stderr_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_checkpoint_exports_validates_and_runs(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert cli.main([str(checkpoint), "-o", str(out), "--quantize", "int8", *CLIPS]) == 0
    printed = capsys.readouterr().out
    assert "ONNX Runtime vs PyTorch: max |Δprobs|" in printed
    assert "int8: top label agrees with fp32" in printed
    # Measured here: either its speed, or a notice that it is not faster than fp32 on this machine.
    assert "int8 speed on this machine:" in printed or "notice: int8 is not faster than fp32" in printed
    int8 = out.with_suffix(".int8.onnx")
    assert out.is_file() and int8.is_file()
    assert int8.stat().st_size < out.stat().st_size

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    info = ModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map)
    assert info.labels == LABELS and info.window_s == 2.5 and info.hop_s == 0.5
    assert info.metrics["accuracy"] == pytest.approx(0.61) and "val actors 4" in info.protocol
    assert (
        info.backbone.startswith("wav2vec2:custom (2 layers")
        and info.preprocessing == PreprocessOptions().to_dict()
    )
    int8_session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    assert ModelInfo.from_metadata(int8_session.get_modelmeta().custom_metadata_map) == info

    # The file runs on its own: a 2 s speech window → a probability row summing to one.
    from emotion_monitor.core.checkpoint import load_classifier

    model, _ = load_classifier(checkpoint)
    audio = validate.load_validation_audio(info, 2, log=lambda _: None)
    x = validate.make_batch(audio, info, 2.0, 2)
    probs = session.run([PROBS_NAME], {INPUT_NAME: x})[0]
    assert np.abs(probs - validate.torch_probs(model, x)).max() <= 1e-4


@pytest.mark.parametrize("method", ["dynamic", "dynamic-per-channel", "blockwise"])
def test_int8_agrees_with_fp32(checkpoint, tmp_path, method):
    from emotion_monitor.core.checkpoint import load_classifier
    from emotion_monitor.export.onnx_export import export_onnx
    from emotion_monitor.export.quantize import quantize_int8

    model, hparams = load_classifier(checkpoint)
    info = cli.info_from_hparams(hparams, 0.5)
    fp32 = export_onnx(model, info, tmp_path / "m.onnx")
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx", method=method)
    assert int8.stat().st_size < fp32.stat().st_size
    audio = validate.load_validation_audio(info, 12, log=lambda _: None)
    result = validate.agreement(validate.cpu_session(fp32), validate.cpu_session(int8), info, audio)
    assert result.clips == len(audio.clips) and result.top1 >= 0.9 and result.max_delta < 0.05
    if audio.is_real:
        assert abs(result.accuracy_variant - result.accuracy_ref) <= 0.1


def test_speed_check_says_when_int8_does_not_pay():
    from emotion_monitor.export.quantize import SpeedCheck

    slower = SpeedCheck(3.0, 2, fp32_ms=42.0, variant_ms=48.0, cpu="avx2 fma")
    assert not slower.faster and slower.describe("int8").startswith("notice: int8 is not faster than fp32")
    assert "48 ms vs fp32 42 ms per 3 s window" in slower.describe("int8")
    faster = SpeedCheck(3.0, 2, fp32_ms=42.0, variant_ms=23.0, cpu="avx2 fma")
    assert faster.faster and "1.83x" in faster.describe("int8") and "notice" not in faster.describe("int8")


def test_missing_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert cli.main([str(tmp_path / "nope.ckpt"), "-o", str(out)]) == 2
    line = _stderr_line(capsys)
    assert "nope.ckpt" in line and "no such" in line
    assert not out.exists()


def test_corrupt_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "corrupt.ckpt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    assert cli.main([str(bad), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "corrupt.ckpt" in _stderr_line(capsys)


def test_checkpoint_with_code_objects_is_refused(tmp_path, capsys):
    bad = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": PreprocessOptions()}}, bad)
    assert cli.main([str(bad), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "pickled.ckpt" in _stderr_line(capsys)


@pytest.mark.parametrize(
    "content",
    [
        {"weights": [1, 2, 3]},  # not a Lightning checkpoint at all
        {"state_dict": {}, "hyper_parameters": {"labels": ["a"]}},  # hparams incomplete
    ],
    ids=["not-lightning", "missing-hparams"],
)
def test_wrong_content_is_one_line_exit_2(tmp_path, capsys, content):
    bad = tmp_path / "wrong.ckpt"
    torch.save(content, bad)
    assert cli.main([str(bad), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "wrong.ckpt" in _stderr_line(capsys)


def test_weights_that_do_not_fit_the_spec_exit_2(tmp_path, capsys):
    model = tiny_classifier(perturb=True)
    other = tiny_classifier(perturb=True)
    other.head = torch.nn.Linear(8, 3)  # 3 outputs: the stored weights no longer fit the 8-class spec
    bad = write_lightning_checkpoint(tmp_path / "mismatch.ckpt", model)
    data = torch.load(bad, weights_only=True)
    data["state_dict"] = {"model." + k: v for k, v in other.state_dict().items()}
    torch.save(data, bad)
    assert cli.main([str(bad), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "mismatch.ckpt" in _stderr_line(capsys)


def test_parity_failure_removes_file_and_exits_1(checkpoint, tmp_path, capsys, monkeypatch):
    # A PyTorch reference that disagrees stands in for an exporter bug.
    real = validate.torch_probs
    monkeypatch.setattr(validate, "torch_probs", lambda model, batch: np.roll(real(model, batch), 1, axis=-1))
    out = tmp_path / "model.onnx"
    assert cli.main([str(checkpoint), "-o", str(out), *CLIPS]) == 1
    line = _stderr_line(capsys)
    assert "max |Δprobs|" in line and "removed" in line
    assert not out.exists()


def test_missing_data_falls_back_to_synthetic_audio(monkeypatch, tmp_path):
    monkeypatch.setenv(validate.DATA_DIR_ENV, str(tmp_path))
    notices = []
    audio = validate.load_validation_audio(ModelInfo(labels=LABELS), 3, log=notices.append)
    assert not audio.is_real and len(audio.clips) == 3
    assert "synthetic" in notices[0] and validate.DATA_DIR_ENV in notices[0]


def test_ravdess_labels_from_file_names(tmp_path):
    from pathlib import Path

    assert validate.ravdess_label(Path("Actor_01/03-01-05-02-01-01-01.flac")) == "angry"
    assert validate.ravdess_label(Path("Actor_01/03-01-08-01-01-01-01.flac")) == "surprised"
    assert validate.ravdess_label(Path("recording.flac")) is None


def test_bad_arguments_exit_2(tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(["-o", str(tmp_path / "m.onnx"), "--opset", "11"])
    assert exc.value.code == 2


def test_help_explains_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "emotion-train checkpoint" in text and "--quantize" in text and "exit codes" in text


def test_no_checkpoint_without_default_model_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(
        sys.modules, "emotion_monitor.export.default_model", None
    )  # as if the file were not installed
    assert cli.main(["-o", str(tmp_path / "m.onnx")]) == 2
    assert "default model" in _stderr_line(capsys)


@pytest.mark.slow
def test_bundled_default_model_exports(tmp_path, capsys):
    """No checkpoint → the bundled Whisper-base model (pip weights + shipped head), validated like any other."""
    default_model = pytest.importorskip("emotion_monitor.export.default_model")
    try:
        default_model.bundle_info()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "default.onnx"
    assert cli.main(["-o", str(out), *CLIPS]) == 0, capsys.readouterr().err
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    info = ModelInfo.from_metadata(metadata)
    assert info.labels and info.metrics and info.protocol
    # The speaker-normalised head travels in the file and was checked against PyTorch.
    assert SPEAKER_NORM_HEAD_KEY in metadata and SPEAKER_BASELINE_HEAD_KEY in metadata
    assert info.speaker_norm["default_mode"] == "blend"
    printed = capsys.readouterr().out
    assert "speaker head (running), ONNX Runtime vs PyTorch" in printed
    assert "speaker head (baseline), ONNX Runtime vs PyTorch" in printed

"""Build the speaker model: Resemblyzer's GE2E voice encoder (weights from the ``resemblyzer`` wheel) → ONNX.

``python -m emotion_monitor.export.speaker_model -o speaker.onnx``; the runtime runs it on first use of speaker
turns (``emotion_monitor.realtime.speaker_embedding.SpeakerEncoder.load``) in a child process. The weights are
read with ``torch.load(weights_only=True)`` from the installed package's ``pretrained.pt`` without importing
``resemblyzer`` (its import pulls webrtcvad and librosa, not needed here).

Checked before the file is kept: ONNX Runtime against PyTorch on mel frames of real speech (RAVDESS when
present, else synthetic speech-like audio) of 0.5 to 3 s, largest difference at most 1e-4.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emotion_monitor.realtime.speaker_embedding import (
    EMBEDDING_NAME,
    EMBEDDING_SIZE,
    MELS_NAME,
    N_MELS,
    SAMPLE_RATE,
    mel_frames,
)

HIDDEN = 256
LAYERS = 3
OPSET = 17
TOLERANCE = 1e-4


class VoiceEncoder(nn.Module):
    """Resemblyzer's ``VoiceEncoder`` network: LSTM(40, 256, 3) → last layer's final hidden state → Linear →
    ReLU → L2 normalisation."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBEDDING_SIZE)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True).clamp_min(1e-12)


def weights_path() -> Path:
    """The installed ``resemblyzer`` package's ``pretrained.pt`` (found without importing the package)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "resemblyzer is not installed (pip install 'speech-emotion-monitor[speakers]')"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: resemblyzer's weights are missing")
    return path


def load_encoder(path: Path | None = None) -> VoiceEncoder:
    checkpoint = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in checkpoint["model_state"].items() if k.startswith(("lstm.", "linear."))}
    encoder = VoiceEncoder()
    encoder.load_state_dict(state)
    return encoder.eval()


def to_onnx(encoder: VoiceEncoder) -> bytes:
    """The encoder as ONNX: ``mels`` float32 ``[batch, frames, 40]`` → ``embedding`` ``[batch, 256]``."""
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder,
            (torch.rand(2, 160, N_MELS),),
            buffer,
            input_names=[MELS_NAME],
            output_names=[EMBEDDING_NAME],
            dynamic_axes={MELS_NAME: {0: "batch", 1: "frames"}, EMBEDDING_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load_from_string(buffer.getvalue()), full_check=True)
    return buffer.getvalue()


def check_audio() -> list[np.ndarray]:
    """Clips to compare ONNX Runtime with PyTorch on: RAVDESS speech when present, else speech-like audio."""
    from emotion_monitor.core.paths import data_root
    from emotion_monitor.export.validate import synthetic_speechlike
    from emotion_monitor.realtime.audio import load_audio

    clips = sorted((data_root() / "ravdess-16k").glob("Actor_0[12]/*.flac"))[::30][:4]
    audio = [load_audio(c, SAMPLE_RATE) for c in clips]
    return audio or [synthetic_speechlike(3.0, SAMPLE_RATE, seed=k) for k in range(4)]


def validate(encoder: VoiceEncoder, model: bytes) -> float:
    """Largest |ONNX Runtime - PyTorch| over the check clips cut to 0.5, 1.5 and 3 s; raises beyond TOLERANCE."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    worst = 0.0
    for clip in check_audio():
        for seconds in (0.5, 1.5, 3.0):
            mels = mel_frames(clip[: round(seconds * SAMPLE_RATE)])[None]
            (got,) = session.run([EMBEDDING_NAME], {MELS_NAME: mels})
            with torch.no_grad():
                want = encoder(torch.from_numpy(mels)).numpy()
            worst = max(worst, float(np.abs(got - want).max()))
    if worst > TOLERANCE:
        raise RuntimeError(f"ONNX Runtime differs from PyTorch by {worst:.2e} (> {TOLERANCE:.0e})")
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    args = p.parse_args(argv)
    try:
        encoder = load_encoder()
        print(f"loaded {weights_path()}", flush=True)
        model = to_onnx(encoder)
        print("onnx.checker: ok", flush=True)
        worst = validate(encoder, model)
        print(f"ONNX Runtime matches PyTorch (largest difference {worst:.1e})", flush=True)
    except (OSError, RuntimeError, KeyError) as exc:
        print(f"speaker model: {exc}", file=sys.stderr)
        return 1
    Path(args.output).write_bytes(model)
    print(f"wrote {args.output} ({len(model) / 1e6:.1f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

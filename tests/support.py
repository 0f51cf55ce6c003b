"""Helpers shared by the tests (fixtures are in ``conftest.py``): tiny random models, a CLI runner, constants.

The tiny models are randomly initialised 2-layer wav2vec2 classifiers on ``configs/model/tiny.yaml``'s encoder
(the one home of the tiny size, also used by ``emotion-train model=tiny``): their estimates mean nothing, but
every tensor, metadata field and code path is the real one. Building them needs torch (tests may); the runtime
code under test never imports torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import yaml

if TYPE_CHECKING:
    import torch

from emotion_monitor.core.corpora import Corpus, Utterance
from emotion_monitor.core.emotions import EMOTIONS
from emotion_monitor.core.feature_data import FeatureSet
from emotion_monitor.core.paths import data_root
from emotion_monitor.core.window_features import CLIP, SEGMENT
from emotion_monitor.export.validate import synthetic_speechlike as export_synthetic_speechlike

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS = EMOTIONS
TINY_WINDOW_S = 2.0
TINY_HOP_S = 0.5
CLI_TIMEOUT_S = 60
ANGRY_CLIP = "Actor_01/03-01-05-02-01-01-01.flac"
"""RAVDESS actor 1, "Kids are talking by the door", angry, strong (the README's demo clip)."""


def tiny_model_config() -> dict:
    """``configs/model/tiny.yaml`` as a dict (its ``backbone.config`` is the tiny encoder)."""
    return yaml.safe_load((REPO_ROOT / "configs" / "model" / "tiny.yaml").read_text())


def tiny_encoder_config(**overrides) -> dict:
    """The tiny wav2vec2 encoder's config (``configs/model/tiny.yaml``), with ``overrides``."""
    return {**tiny_model_config()["backbone"]["config"], **overrides}


def compose_config(overrides: list[str] | tuple[str, ...] = ()):
    """``emotion-train``'s composed config (the installed ``configs`` package) with ``overrides``."""
    from hydra import compose, initialize_config_module

    import emotion_monitor.core.train  # noqa: F401  (registers the config's resolvers)

    with initialize_config_module(config_module="emotion_monitor.configs", version_base="1.3"):
        return compose(config_name="config", overrides=["output_dir=/tmp/out", *overrides])


def ravdess_datamodule(root: Path, **overrides):
    """``RavdessDataModule`` as ``dataset=ravdess`` configures it (its one home), on ``root``, with ``overrides``."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose_config().dataset, resolve=True)
    return instantiate({**cfg, "root": str(root), **overrides}, _convert_="all")


def recipe_train_settings(freeze_layers: int = 0, **overrides):
    """``TrainSettings`` of the shipped recipe (``configs/train/train.yaml``, its one home), unweighted loss, with
    ``overrides`` (field=value)."""
    from dataclasses import replace

    from emotion_monitor.core.builders import train_settings

    cfg = yaml.safe_load((REPO_ROOT / "configs" / "train" / "train.yaml").read_text())
    cfg["loss"]["class_weights"] = None
    return replace(train_settings(cfg, freeze_layers, [], len(LABELS)), **overrides)


def tiny_classifier(
    num_classes: int = len(LABELS), seed: int = 0, perturb: bool = False, time_pooling: str = "mean"
):
    """A random classifier on the tiny encoder with tiny.yaml's head sizes (deterministic for a seed).

    ``time_pooling``: the statistics over time the head reads (``mean`` or ``mean_std``).
    ``perturb``: BatchNorm statistics away from identity and a larger head, so eval mode is not an identity and
    the probabilities are far from uniform (parity checks are then real tests). Returned in eval mode.
    """
    import torch

    from emotion_monitor.core.backbones import build_backbone
    from emotion_monitor.core.model import EmotionClassifier

    cfg = tiny_model_config()
    torch.manual_seed(seed)
    model = EmotionClassifier(
        build_backbone("wav2vec2", None, config=tiny_encoder_config()),
        num_classes,
        hidden_dims=tuple(cfg["hidden_dims"]),
        dropout=cfg["dropout"],
        time_pooling=time_pooling,
    )
    if perturb:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm1d):
                    module.running_mean.uniform_(-0.5, 0.5)
                    module.running_var.uniform_(0.5, 2.0)
            torch.nn.init.normal_(model.head.weight, std=2.0)
    return model.eval()


def tiny_speaker_norm_head(seed: int = 1):
    """A random head-only classifier with the tiny encoder's sizes, in eval mode, with non-trivial BatchNorm
    statistics (so a wrong centring shows in the output)."""
    import torch

    from emotion_monitor.core.model import EmotionClassifier, ShapeOnlyBackbone

    encoder = tiny_encoder_config()
    torch.manual_seed(seed)
    head = EmotionClassifier(
        ShapeOnlyBackbone(encoder["hidden_size"], encoder["num_hidden_layers"]), len(LABELS)
    )
    with torch.no_grad():
        for bn in (m for m in head.modules() if isinstance(m, torch.nn.BatchNorm1d)):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return head.eval()


def tiny_info(**overrides):
    """``ModelInfo`` of a tiny test model (RAVDESS labels, 3 s window)."""
    from emotion_monitor.realtime.metadata import ModelInfo

    fields = dict(
        labels=LABELS, window_s=3.0, hop_s=TINY_HOP_S, backbone="wav2vec2:tiny-random", protocol="test"
    )
    return ModelInfo(**(fields | overrides))


def build_tiny_model(path: Path, speaker_norm: bool = True) -> Path:
    """Export a random tiny classifier with RAVDESS labels and a ``TINY_WINDOW_S`` window, with random speaker
    heads (running and baseline) in its metadata unless ``speaker_norm`` is False."""
    from emotion_monitor.export.onnx_export import export_onnx

    heads = (
        {"running": tiny_speaker_norm_head(1), "baseline": tiny_speaker_norm_head(2)} if speaker_norm else {}
    )
    info = tiny_info(window_s=TINY_WINDOW_S, backbone="tiny-random-wav2vec2", protocol="")
    return export_onnx(tiny_classifier(), info, path, speaker_heads=heads)


def write_tiny_checkpoint(path: str | Path, window_s: float = 3.0, seed: int = 0) -> Path:
    """A tiny random checkpoint in the emotion-train format, RAVDESS labels and default preprocessing."""
    from emotion_monitor.core.checkpoint import write_checkpoint
    from emotion_monitor.realtime.audio import PreprocessOptions

    model = tiny_classifier(len(LABELS), seed)
    return write_checkpoint(path, model, list(LABELS), window_s, PreprocessOptions().to_dict())


def run_cli(module: str, *args: str, env: dict | None = None, timeout: float = CLI_TIMEOUT_S, **kwargs):
    """Run ``python -m emotion_monitor.realtime.<module> ARGS`` like a user would; returns the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", f"emotion_monitor.realtime.{module}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env=env or dict(os.environ),
        **kwargs,
    )


def data_dir() -> Path:
    """The corpora folder (``emotion_monitor.core.paths``: ``$EMOTION_DATA_DIR``, else ``shared/data`` beside the repository
    root, where the tests run)."""
    return data_root().resolve()


def synthetic_speechlike(seconds: float, sample_rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """Voiced-like test signal in [-0.5, 0.5]: the exporter's own stand-in for speech, so there is one."""
    return export_synthetic_speechlike(seconds, sample_rate, seed)


@dataclass(frozen=True)
class LiveRun:
    """What ``emotion-live`` did while a recording was played into PulseAudio: exit status, the rest of its
    stdout after the first line, stderr, and its JSONL hops."""

    returncode: int
    stdout: str
    stderr: str
    hops: list[dict]


def live_from_pulse(pulse_sink, wav: Path, out: Path, *live_args: str, play_timeout_s: float = 30) -> LiveRun:
    """Start ``emotion-live --device pulse`` recording ``pulse_sink``'s monitor (writing JSONL to ``out``), play
    ``wav`` into the sink with ``paplay`` once the stream runs, and wait for the monitor to finish (its
    ``--max-seconds`` in ``live_args`` ends it)."""
    env = dict(pulse_sink.env, PULSE_SOURCE=pulse_sink.monitor)
    cmd = [
        sys.executable,
        "-m",
        "emotion_monitor.realtime.live",
        "--device",
        "pulse",
        *live_args,
        "--jsonl",
        str(out),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT
    )
    try:
        assert "emotion-live:" in proc.stdout.readline()
        time.sleep(0.5)  # let the stream start before the recording does
        subprocess.run(
            ["paplay", "-d", pulse_sink.sink, str(wav)],
            env=pulse_sink.env,
            timeout=play_timeout_s,
            check=True,
        )
        rest, err = proc.communicate(timeout=play_timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
    hops = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    return LiveRun(proc.returncode, rest, err, hops)


# -- manifests and emotion-train runs ------------------------------------------------------------------------
MANIFEST_LABELS = ("happy", "sad", "angry")
"""The labels of ``write_manifest``'s recordings."""


def write_manifest(tmp_path: Path) -> Path:
    """A small manifest in ``tmp_path``: 3 speakers x 3 labels x 2 synthetic recordings (a label-dependent pitch)."""
    rows = ["path,label,speaker"]
    for s, speaker in enumerate(("ann", "bob", "cy")):
        for k, label in enumerate(MANIFEST_LABELS):
            for rep in range(2):
                name = f"{speaker}-{label}-{rep}.wav"
                # A label-dependent pitch so the classes are learnable from the tiny encoder's features.
                sf.write(tmp_path / name, synthetic_speechlike(1.5, seed=100 * k + 10 * s + rep), 16_000)
                rows.append(f"{name},{label},{speaker}")
    path = tmp_path / "mine.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


TINY_HEAD_RUN = (
    "dataset.num_folds=3",
    "model.backbone.hidden_size=32",
    "model.backbone.num_layers=2",
    "train.max_epochs=2",
    "dataset.batch_size=4",
    "num_threads=1",
)
"""emotion-train settings for heads on a tiny model's features (32 wide, 2 layers): 3 folds, 2 short epochs."""


def run_emotion_train(tmp_path: Path, *overrides: str, timeout: float = 300):
    """``emotion-train experiment=head corpora=manifest OVERRIDES`` with a private feature cache."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    cmd = [
        sys.executable,
        "-m",
        "emotion_monitor.core.train",
        "experiment=head",
        "corpora=manifest",
        *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)


# -- hand-made cached features for the protocol ------------------------------------------------------------
C = len(EMOTIONS)
"""Classes of the hand-made feature sets below (the product's eight emotions)."""
CALM, HAPPY, SAD = EMOTIONS.index("calm"), EMOTIONS.index("happy"), EMOTIONS.index("sad")


class FirstDims:
    """A stand-in head: the logits are the first C values of the embedding layer's pooled features."""

    def eval(self):
        return self

    def classify_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled[:, 0, :C] * 10.0


def scores_window(label_scores: dict[int, float]) -> np.ndarray:
    """One hand-made window's pooled features ``[2, C]``: ``label_scores`` in the embedding layer (what ``FirstDims``
    reads)."""
    x = np.zeros((2, C), np.float32)
    for k, v in label_scores.items():
        x[0, k] = v
    return x


def make_set() -> FeatureSet:
    """Two corpora: "a" (all classes; speakers a:1, a:2), "b" (no calm; speaker b:1). Rows are windows."""
    a = Corpus("a", [], tuple(range(C)))
    b = Corpus("b", [], tuple(c for c in range(C) if c != CALM))
    a.utterances = [Utterance(Path("a1.wav"), HAPPY, "a:1", "a"), Utterance(Path("a2.wav"), SAD, "a:2", "a")]
    b.utterances = [Utterance(Path("b1.wav"), SAD, "b:1", "b")]
    rows = [
        # utt, kind, speech_s, trailing_s, scores
        (0, CLIP, 3.0, 0.0, {HAPPY: 1.0}),
        (0, CLIP, 3.0, 0.0, {SAD: 0.4}),  # mean over a1's clip windows: happy wins
        (0, SEGMENT, 0.5, 0.0, {SAD: 1.0}),  # too little speech for the gate: not scored
        (0, SEGMENT, 1.5, 0.2, {HAPPY: 1.0}),  # scored, right
        (1, CLIP, 2.0, 0.0, {HAPPY: 1.0}),  # a2 is sad: wrong
        (1, SEGMENT, 1.2, 1.4, {SAD: 1.0}),  # speech ended too long ago: not scored
        (2, CLIP, 2.0, 0.0, {CALM: 1.0, SAD: 0.5}),  # corpus b has no calm: sad is its top class
        (2, SEGMENT, 1.1, 0.0, {CALM: 1.0, HAPPY: 0.6}),  # scored, happy: wrong
    ]
    return FeatureSet(
        corpora=[a, b],
        views=["clean"],
        utterances=a.utterances + b.utterances,
        pooled=np.stack([scores_window(r[4]) for r in rows]).astype(np.float16),
        utt=np.array([r[0] for r in rows]),
        view=np.zeros(len(rows), np.int64),
        kind=np.array([r[1] for r in rows], np.int8),
        speech_s=np.array([r[2] for r in rows], np.float32),
        trailing_s=np.array([r[3] for r in rows], np.float32),
        allowed=np.array([[True] * C, [c != CALM for c in range(C)]]),
    )


def assert_runs_without(statements: list[str], forbidden: tuple[str, ...]) -> None:
    """Run ``statements`` (Python lines) in a fresh interpreter from the checkout; they must succeed and leave
    neither torch nor any module whose name starts with one of ``forbidden`` imported."""
    code = "\n".join(
        [
            "import sys",
            *statements,
            f"bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', *{forbidden!r})))",
            "assert not bad, bad",
            "print('TORCH-FREE')",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TORCH-FREE" in result.stdout

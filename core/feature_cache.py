"""Frozen-backbone fast path: per-layer pooled hidden states, computed once per clip and crop, cached on disk.

With the encoder frozen, ``EmotionClassifier.classify_pooled`` only needs the per-layer time means
``[L+1, H]`` of each model input (pooling commutes with the layer weighting), so one pass of the encoder
over the data set is enough and every later epoch of head training takes seconds on a CPU.

Cache key: sha256 of the audio file's bytes + backbone id + crop + preprocessing options, so editing a
file, switching weights or changing the level/trim settings never reuses stale features. Layout::

    <cache_dir>/features/<backbone_id>/<preprocessing hash>/<file sha256[:24]>/<crop>.npy  float32 [L+1, H]

Run ``python -m core.feature_cache --help`` to fill the cache for a RAVDESS folder in the background.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.model import masked_mean
from realtime.audio import SAMPLE_RATE, PreprocessOptions, load_audio, prepare_clip, prepare_input

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Crop:
    """Which part of a (trimmed) clip becomes one model input.

    window_s None: the whole clip. Otherwise crop ``index`` of ``count`` windows of ``window_s`` seconds,
    evenly spaced from the clip's start to its end; a clip no longer than the window is used whole.
    """

    window_s: float | None = None
    index: int = 0
    count: int = 1

    @property
    def name(self) -> str:
        if self.window_s is None:
            return "full"
        return f"w{self.window_s:.2f}_{self.index}of{self.count}"

    def bounds(self, num_samples: int, sample_rate: int = SAMPLE_RATE) -> tuple[int, int]:
        """``(start, end)`` sample indices of this crop in a clip of ``num_samples``."""
        if self.window_s is None:
            return 0, num_samples
        width = int(round(self.window_s * sample_rate))
        if num_samples <= width:
            return 0, num_samples
        span = num_samples - width
        start = 0 if self.count == 1 else int(round(self.index * span / (self.count - 1)))
        return start, start + width

    def apply(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """``[S]`` → ``[min(S, window)]`` samples."""
        start, end = self.bounds(len(samples), sample_rate)
        return samples[start:end]


def crops_for(window_s: float | None, count: int) -> list[Crop]:
    """``count`` evenly spaced crops of ``window_s`` seconds (or the whole clip when ``window_s`` is None)."""
    if window_s is None:
        return [Crop()]
    return [Crop(window_s, i, count) for i in range(count)]


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def options_hash(options: PreprocessOptions) -> str:
    """Short stable hash of the preprocessing options (part of the cache key)."""
    return hashlib.sha256(json.dumps(options.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


@torch.no_grad()
def pooled_states(backbone: torch.nn.Module, window: np.ndarray) -> np.ndarray:
    """One model input ``[S]`` (already through ``prepare_input``) → per-layer time means ``[L+1, H]``.

    Same arithmetic as ``EmotionClassifier.pool`` on a batch of one (no padding, so no mask).
    """
    hidden_states, frame_mask = backbone(torch.from_numpy(np.ascontiguousarray(window))[None])
    return torch.stack([masked_mean(h, frame_mask) for h in hidden_states], dim=1)[0].float().numpy()


class FeatureCache:
    """Pooled hidden states of a frozen backbone, cached per (file content, backbone, crop, preprocessing).

    backbone: a ``SpeechBackbone`` in eval mode (frozen); only used on a cache miss.
    backbone_id: names the weights, e.g. ``whisper-base-d01c3014881c9c6f``; part of the key.
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        backbone_id: str,
        options: PreprocessOptions,
        root: str | Path | None = None,
    ):
        from core.ct2 import cache_dir

        self.backbone = backbone.eval() if backbone is not None else None
        self.options = options
        self.root = Path(root or cache_dir() / "features") / backbone_id / options_hash(options)

    def _path(self, digest: str, crop: Crop) -> Path:
        return self.root / digest[:24] / f"{crop.name}.npy"

    def get(self, audio_path: str | Path, crops: list[Crop]) -> np.ndarray:
        """``[len(crops), L+1, H]`` float32 for one audio file; computes and stores what is missing."""
        digest = file_sha256(audio_path)
        paths = [self._path(digest, c) for c in crops]
        if all(p.is_file() for p in paths):
            return np.stack([np.load(p) for p in paths])
        if self.backbone is None:
            raise KeyError(f"{audio_path}: features not cached and no backbone to compute them")
        clip = prepare_clip(load_audio(audio_path), self.options)
        out, done = [], {}
        for crop, path in zip(crops, paths, strict=True):
            if path.is_file():
                out.append(np.load(path))
                continue
            # Crops of clips shorter than the window are the whole clip: compute each distinct span once.
            span = crop.bounds(len(clip))
            full = self._path(digest, Crop())
            if span not in done and span == (0, len(clip)) and full.is_file():
                done[span] = np.load(full)
            if span not in done:
                done[span] = pooled_states(
                    self.backbone, prepare_input(clip[span[0] : span[1]], self.options)
                )
            feats = done[span]
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, feats)
            os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
            out.append(feats)
        return np.stack(out)


def ravdess_files(data_dir: str | Path, actors: range | list[int] = range(1, 21)) -> list[Path]:
    """RAVDESS speech files of the given actors, sorted."""
    files = []
    for actor in actors:
        files += sorted((Path(data_dir) / f"Actor_{actor:02d}").glob("*.flac"))
    return files


def packaged_backbone(name: str = "whisper-base"):
    """``(backbone, backbone_id)`` for installed packaged Whisper weights; the id carries the weights hash."""
    from core import ct2
    from core.whisper import build_whisper_backbone

    backbone = build_whisper_backbone(name_or_path=name)
    return backbone, f"{name}-{ct2.PACKAGED[name].sha256[:16]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Fill the pooled-feature cache for RAVDESS (frozen backbone)."
    )
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/ravdess-16k")
    )
    parser.add_argument("--weights", default="whisper-base")
    parser.add_argument("--windows", type=float, nargs="*", default=[3.0], help="crop lengths, seconds")
    parser.add_argument("--crops", type=int, default=3, help="crops per clip and window length")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    backbone, backbone_id = packaged_backbone(args.weights)
    cache = FeatureCache(backbone, backbone_id, PreprocessOptions())
    files = ravdess_files(args.data_dir)
    # Whole clips first for every file, then each window length: experiments can start on early passes.
    for crops in [crops_for(None, 1)] + [crops_for(w, args.crops) for w in args.windows]:
        start = time.time()
        for i, path in enumerate(files):
            cache.get(path, crops)
            if (i + 1) % 100 == 0:
                log.info("%s: %d/%d files, %.1f s", crops[0].name, i + 1, len(files), time.time() - start)
        log.info("done %s in %.1f s", crops[0].name, time.time() - start)


if __name__ == "__main__":
    main()

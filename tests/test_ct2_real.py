"""The real packaged weights: sha256, conversion vs CTranslate2's own encoder, and a transcription.

Skipped (with the pip command in the reason) when the weight packages are not installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from emotion_monitor.core import ct2

SENTENCE_FILE = "Actor_01/03-01-05-02-01-01-01.flac"  # statement 01: "Kids are talking by the door"


def installed(name: str) -> list[Path]:
    try:
        return ct2.packaged_files(name)
    except ct2.MissingWeightsError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("name", list(ct2.PACKAGED))
def test_sha256_of_installed_weights(name):
    installed(name)
    assert len(ct2.read_packaged_bytes(name, verify=True)) > 10_000_000


def ct2_model_dir(name: str, tmp_path: Path) -> Path:
    """A CTranslate2 model directory (parts concatenated + config/vocabulary) for ctranslate2.models.Whisper."""
    parts = installed(name)
    with open(tmp_path / "model.bin", "wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    for extra in ("config.json", "vocabulary.txt", "tokenizer.json"):
        shutil.copy(parts[0].parent / extra, tmp_path / extra)
    return tmp_path


def mel_of(path: Path) -> np.ndarray:
    from transformers import WhisperFeatureExtractor

    from emotion_monitor.realtime.audio import load_audio

    audio = load_audio(path)
    return WhisperFeatureExtractor()(audio, sampling_rate=16_000, return_tensors="np").input_features.astype(
        np.float32
    )


def encoder_matches_ctranslate2(name: str, tmp_path: Path, ravdess: Path) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    model_dir = ct2_model_dir(name, tmp_path)
    mel = mel_of(ravdess / SENTENCE_FILE)
    reference = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    want = np.array(reference.encode(ctranslate2.StorageView.from_array(mel)))
    with torch.no_grad():
        got = ct2.load_whisper_encoder(name)(torch.from_numpy(mel)).last_hidden_state.numpy()
    # Measured: whisper-tiny.en max |diff| 2.7e-5, whisper-base 1.0e-3 (relative 3.7e-6).
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
    np.testing.assert_allclose(got, want, atol=5e-3)


@pytest.mark.data
def test_tiny_en_encoder_matches_ctranslate2(tmp_path, ravdess_16k):
    encoder_matches_ctranslate2("whisper-tiny.en", tmp_path, ravdess_16k)


@pytest.mark.slow
@pytest.mark.data
def test_base_encoder_matches_ctranslate2(tmp_path, ravdess_16k):
    encoder_matches_ctranslate2("whisper-base", tmp_path, ravdess_16k)


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("name", list(ct2.PACKAGED))
def test_converted_model_transcribes_a_ravdess_sentence(name, ravdess_16k):
    """Greedy decoding with the converted encoder *and* decoder gives the spoken sentence."""
    from tokenizers import Tokenizer
    from transformers import WhisperForConditionalGeneration

    parts = installed(name)
    tokenizer = Tokenizer.from_file(str(parts[0].parent / "tokenizer.json"))
    model = ct2.load_whisper_model(name)
    generator = WhisperForConditionalGeneration(model.config).eval()
    generator.model = model
    generator.proj_out.weight = model.decoder.embed_tokens.weight  # Whisper ties the output projection
    multilingual = model.config.vocab_size >= 51865
    prompt = [
        "<|startoftranscript|>",
        *(["<|en|>", "<|transcribe|>"] if multilingual else []),
        "<|notimestamps|>",
    ]
    ids = [tokenizer.token_to_id(t) for t in prompt]
    end = tokenizer.token_to_id("<|endoftext|>")
    mel = torch.from_numpy(mel_of(ravdess_16k / SENTENCE_FILE))
    with torch.no_grad():
        encoded = model.encoder(mel).last_hidden_state
        for _ in range(20):
            logits = generator(encoder_outputs=(encoded,), decoder_input_ids=torch.tensor([ids])).logits
            token = int(logits[0, -1].argmax())
            if token == end:
                break
            ids.append(token)
    text = tokenizer.decode(ids[len(prompt) :]).strip().lower()
    assert text.startswith("kids are talking by the door"), text

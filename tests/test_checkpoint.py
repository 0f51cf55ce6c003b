"""Checkpoint contract: plain hparams, weights_only loading, identical predictions, one-line errors."""

from __future__ import annotations

import pytest
import torch
from support import tiny_classifier, tiny_encoder_config, write_tiny_checkpoint

from emotion_monitor.core.checkpoint import (
    REQUIRED_HPARAMS,
    CheckpointError,
    load_classifier,
    main,
    write_checkpoint,
)
from emotion_monitor.core.emotions import EMOTIONS
from emotion_monitor.realtime.audio import PreprocessOptions


def test_tiny_checkpoint_reloads_and_predicts_the_same(tmp_path):
    torch.manual_seed(0)
    model = tiny_classifier(seed=3).eval()
    path = write_checkpoint(tmp_path / "m.ckpt", model, list(EMOTIONS), 2.5, PreprocessOptions().to_dict())
    raw = torch.load(path, weights_only=True)
    assert all(k.startswith("model.") for k in raw["state_dict"])
    assert set(REQUIRED_HPARAMS) <= set(raw["hyper_parameters"])

    reloaded, hparams = load_classifier(path)
    assert not reloaded.training
    assert hparams["labels"] == list(EMOTIONS)
    assert hparams["window_s"] == 2.5
    assert hparams["model_spec"]["backbone"]["config"]["hidden_size"] == tiny_encoder_config()["hidden_size"]
    x = torch.randn(3, 16_000)
    with torch.no_grad():
        assert torch.allclose(reloaded(x), model(x), atol=1e-6)


def test_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_classifier(tmp_path / "nope.ckpt")
    assert "no such checkpoint" in str(err.value) and "\n" not in str(err.value)


def test_corrupt_file_is_one_line_error(tmp_path):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(b"this is not a zip file at all")
    with pytest.raises(CheckpointError) as err:
        load_classifier(path)
    assert "corrupt" in str(err.value) and "\n" not in str(err.value)


def test_non_plain_objects_are_refused(tmp_path):
    from omegaconf import OmegaConf

    path = tmp_path / "dictconfig.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": OmegaConf.create({"labels": ["a"]})}, path)
    with pytest.raises(CheckpointError, match="not a safe checkpoint") as err:
        load_classifier(path)
    assert "weights_only=False" not in str(err.value)  # never advise loading untrusted code


def test_missing_hparams_and_mismatched_weights(tmp_path):
    path = tmp_path / "nohp.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"labels": ["a"]}}, path)
    with pytest.raises(CheckpointError, match="lack model_spec"):
        load_classifier(path)

    good = write_tiny_checkpoint(tmp_path / "tiny.ckpt")
    data = torch.load(good, weights_only=True)
    data["state_dict"].pop("model.head.weight")
    torch.save(data, tmp_path / "partial.ckpt")
    with pytest.raises(CheckpointError, match="1 missing"):
        load_classifier(tmp_path / "partial.ckpt")

    data = torch.load(good, weights_only=True)
    data["state_dict"]["model.head.weight"] = torch.zeros(3, 3)  # wrong shape for the stored spec
    torch.save(data, tmp_path / "reshaped.ckpt")
    with pytest.raises(CheckpointError, match="do not match") as err:
        load_classifier(tmp_path / "reshaped.ckpt")
    assert "\n" not in str(err.value)


def test_cli_checks(tmp_path, capsys):
    write_tiny_checkpoint(tmp_path / "cli.ckpt", window_s=2.0)
    main(["check", str(tmp_path / "cli.ckpt")])
    out = capsys.readouterr().out
    assert "window_s=2.0" in out and "neutral" in out
    with pytest.raises(SystemExit) as exc:
        main(["check", str(tmp_path / "missing.ckpt")])
    assert exc.value.code == 2

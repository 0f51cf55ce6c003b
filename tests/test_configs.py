"""Hydra configs: every group composes, overrides work, and configs are found installed or from any cwd."""

from __future__ import annotations

import dataclasses
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from support import compose_config, tiny_encoder_config

from emotion_monitor.core.builders import build_loggers, build_model, train_settings
from emotion_monitor.core.paths import data_root

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
MODEL_OPTIONS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))


def compose_cfg(overrides: list[str] | None = None):
    return compose_config(overrides or [])


def test_default_config_composes_and_resolves(monkeypatch):
    monkeypatch.delenv("EMOTION_DATA_DIR", raising=False)
    cfg = compose_cfg()
    assert cfg.data_dir == str(data_root() / "ravdess-16k")
    assert (
        cfg.dataset._target_ == "emotion_monitor.core.data.RavdessDataModule"
        and cfg.dataset.root == cfg.data_dir
    )
    assert cfg.model.backbone.name_or_path == "facebook/wav2vec2-base"
    assert cfg.model.backbone.gradient_checkpointing is True and cfg.model.freeze_layers == 6
    assert cfg.train.loss.gamma == 1.0 and cfg.train.loss.label_smoothing == 0.05
    assert cfg.train.optimizer.lr_scales == {"lower": 0.01, "upper": 0.1, "head": 1.0}
    assert cfg.trainer.max_epochs == cfg.train.max_epochs and cfg.trainer.gradient_clip_val == 1.0
    assert cfg.logger == ["csv", "tensorboard"] and cfg.loggers.wandb.offline is True
    assert cfg.debug.fast_dev_run is False and cfg.debug.overfit_batches == 0
    assert cfg.checkpoint.monitor == "val/macro_f1" and cfg.checkpoint.mode == "max"
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    monkeypatch.setenv("EMOTION_DATA_DIR", "/data/x")
    assert compose_cfg().data_dir == "/data/x/ravdess-16k"


CACHED_FEATURE_MODELS = ("head",)
"""Model options for cached features (no raw-audio encoder): composed by their experiments' tests."""


@pytest.mark.parametrize("option", [o for o in MODEL_OPTIONS if o not in CACHED_FEATURE_MODELS])
def test_every_model_option_composes(option):
    cfg = compose_cfg([f"model={option}"])
    backbone = cfg.model.backbone
    assert backbone._target_ == "emotion_monitor.core.backbones.build_backbone"
    assert backbone.kind in ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper")
    assert cfg.model.layer_pooling in ("weighted", "last")
    assert isinstance(cfg.model.freeze_layers, int)
    OmegaConf.to_container(cfg.model, resolve=True)


def test_head_experiment_composes_the_cached_feature_path(monkeypatch):
    """experiment=head: the head without an encoder, on cached features of the four corpora, one trainer's
    settings."""
    monkeypatch.delenv("EMOTION_DATA_DIR", raising=False)
    cfg = compose_cfg(["experiment=head"])
    assert (
        cfg.model.backbone._target_ == "emotion_monitor.core.model.ShapeOnlyBackbone"
        and cfg.model.layer_pooling == "concat"
    )
    assert cfg.dataset._target_ == "emotion_monitor.core.feature_data.FeatureDataModule"
    assert (
        set(cfg.corpora) == {"ravdess", "crema-d", "ased", "nemo"}
        and cfg.corpora["crema-d"].kind == "crema-d"
    )
    assert cfg.corpora["ased"].kind == "ased" and cfg.corpora["nemo"].root.endswith("nemo-16k")
    assert (
        cfg.dataset.corpora == cfg.corpora
        and list(cfg.dataset.train_views) == ["clip"]
        and cfg.dataset.class_balance
    )
    assert (
        cfg.train.loss.gamma == 1.0 and cfg.train.loss.label_smoothing == 0.05
    )  # the same loss as train.yaml
    assert cfg.task == "fit" and cfg.checkpoint.monitor is None
    model, freeze_layers = build_model(cfg.model, 8)
    assert model.features[0].in_features == 7 * 512 and freeze_layers == 0
    one = compose_cfg(["experiment=head", "corpora=ravdess", "task=evaluate"])
    assert set(one.corpora) == {"ravdess"} and one.task == "evaluate"


def test_family_options_select_their_encoders():
    assert {"wav2vec", "hubert", "wavlm", "tiny"} <= set(MODEL_OPTIONS)
    assert compose_cfg(["model=hubert"]).model.backbone.kind == "hubert"
    assert compose_cfg(["model=wavlm"]).model.backbone.name_or_path == "microsoft/wavlm-base-plus"


def test_tiny_option_builds_offline():
    cfg = compose_cfg(["model=tiny"])
    assert OmegaConf.to_container(cfg.model.backbone.config) == tiny_encoder_config()
    model, freeze_layers = build_model(cfg.model, 8)
    assert freeze_layers == 1 and model.num_classes == 8 and model.backbone.hidden_size == 32


TINY_OVERRIDE = ",".join(
    f"{k}:{list(v) if isinstance(v, list) else v}" for k, v in tiny_encoder_config().items()
)


def test_backbone_config_override_on_the_command_line():
    """`model.backbone.config={...}` turns any family option into an offline random-weight model."""
    tiny = TINY_OVERRIDE
    cfg = compose_cfg(
        ["model=wavlm", f"model.backbone.config={{{tiny}}}", "model.layer_pooling=last", "model.dropout=0.2"]
    )
    model, _ = build_model(cfg.model, 8)
    assert model.backbone.model.config.model_type == "wavlm" and model.backbone.num_layers == 2
    assert model.layer_pooling == "last" and model.dropout == 0.2


def test_hubert_builds():
    cfg = compose_cfg(["model=hubert", f"model.backbone.config={{{TINY_OVERRIDE}}}"])
    model, _ = build_model(cfg.model, 8)
    assert model.backbone.model.config.model_type == "hubert"
    assert not any(p.requires_grad for p in model.backbone.model.feature_extractor.parameters())


def test_dataset_and_trainer_overrides():
    cfg = compose_cfg(
        [
            "dataset.fold=2",
            "dataset.num_folds=5",
            "dataset.window_s=2.0",
            "trainer.strategy=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "seed=7",
        ]
    )
    assert (cfg.dataset.fold, cfg.dataset.num_folds, cfg.dataset.window_s) == (2, 5, 2.0)
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 4, 2)
    assert cfg.dataset.split_seed == 7


def test_logger_selection(tmp_path):
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    cfg = compose_cfg([f"output_dir={tmp_path}"])
    assert [type(x) for x in build_loggers(cfg)] == [CSVLogger, TensorBoardLogger]
    assert [type(x) for x in build_loggers(compose_cfg([f"output_dir={tmp_path}", "logger=csv"]))] == [
        CSVLogger
    ]
    assert build_loggers(compose_cfg(["logger=[]"])) == []
    wandb = compose_cfg(["logger=wandb"])
    assert wandb.logger == "wandb" and wandb.loggers.wandb._target_.endswith("WandbLogger")
    with pytest.raises(ValueError, match="unknown logger"):
        build_loggers(compose_cfg(["logger=comet"]))


def test_train_settings_from_config():
    cfg = compose_cfg(["train.optimizer.lr=1e-3", "train.mixup.prob=0"])
    labels = [0] * 2 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4 + [6] * 4 + [7] * 4
    s = train_settings(cfg.train, 3, labels, 8)
    assert s.lr == 1e-3 and s.freeze_layers == 3 and s.mixup_prob == 0.0 and s.gamma == 1.0
    assert s.class_weights[0] == pytest.approx(2 * s.class_weights[1])  # neutral is half as frequent
    given = compose_cfg(["train.loss.class_weights=[1,1,1,1,1,1,1,2]"])
    assert train_settings(given.train, 0, labels, 8).class_weights[-1] == 2.0
    assert (
        train_settings(compose_cfg(["train.loss.class_weights=null"]).train, 0, labels, 8).class_weights
        is None
    )
    with pytest.raises(ValueError, match="8"):
        train_settings(compose_cfg(["train.loss.class_weights=[1,2]"]).train, 0, labels, 8)


def _plain(value):
    """Tuples as lists, so a dataclass default compares with its YAML value."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _defaults(target) -> dict:
    """A dataclass's field defaults, or a callable's keyword defaults: ``{name: default}``."""
    if dataclasses.is_dataclass(target):
        return {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(target)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        }
    params = inspect.signature(target).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _mirrors():
    """(name, class whose options mirror YAML, its composed YAML node as a plain dict)."""
    from emotion_monitor.core.augment import AugmentOptions
    from emotion_monitor.core.data import RavdessDataModule
    from emotion_monitor.core.feature_data import FeatureDataModule
    from emotion_monitor.realtime.audio import PreprocessOptions
    from emotion_monitor.realtime.windowing import SpeechGate

    raw = OmegaConf.to_container(compose_cfg().dataset, resolve=True)
    features = OmegaConf.to_container(compose_cfg(["experiment=head"]).dataset, resolve=True)
    return [
        ("RavdessDataModule", RavdessDataModule, raw),
        ("PreprocessOptions", PreprocessOptions, raw["preprocessing"]),
        ("AugmentOptions", AugmentOptions, raw["augment"]),
        ("FeatureDataModule", FeatureDataModule, features),
        ("SpeechGate", SpeechGate, features["gate"]),
    ]


def test_no_options_default_disagrees_with_its_yaml():
    """The YAML is the one home of each training default: a class mirroring a config node has either no default
    for an option, or the YAML's own value; every option the YAML sets exists, every required one is set."""
    from emotion_monitor.core.lightning_module import TrainSettings

    assert _defaults(TrainSettings) == {}  # configs/train/train.yaml only (core.builders.train_settings)
    disagreements = []
    for name, target, node in _mirrors():
        defaults = _defaults(target)
        fields = (
            {f.name for f in dataclasses.fields(target)}
            if dataclasses.is_dataclass(target)
            else set(inspect.signature(target).parameters) - {"self"}
        )
        node = {k: v for k, v in node.items() if k != "_target_"}
        assert set(node) <= fields, f"{name}: the YAML sets unknown options {sorted(set(node) - fields)}"
        assert fields - set(defaults) <= set(node), (
            f"{name}: no value for {sorted(fields - set(defaults) - set(node))}"
        )
        disagreements += [
            f"{name}.{key}: default {defaults[key]!r}, YAML {node[key]!r}"
            for key in sorted(set(defaults) & set(node))
            if _plain(defaults[key]) != _plain(node[key])
        ]
    assert not disagreements, "; ".join(disagreements)


def test_train_settings_cover_every_yaml_key():
    """core.builders.train_settings reads every key of the train group that TrainSettings stores."""
    cfg = compose_cfg()
    settings = train_settings(cfg.train, 2, [0, 1], 8)
    train = OmegaConf.to_container(cfg.train, resolve=True)
    assert (
        settings.t0_epochs == train["scheduler"]["t0_epochs"]
        and settings.eta_min == train["scheduler"]["eta_min"]
    )
    assert (settings.mixup_alpha, settings.mixup_prob) == (train["mixup"]["alpha"], train["mixup"]["prob"])
    assert (
        list(settings.betas) == train["optimizer"]["betas"]
        and settings.lr_scales == train["optimizer"]["lr_scales"]
    )


def _console_script(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name) or pytest.skip(f"{name} is not installed")


def test_emotion_train_composes_from_another_cwd(tmp_path):
    result = subprocess.run(
        [_console_script("emotion-train"), "model=tiny", "dataset.fold=1", "--cfg", "job"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load(result.stdout)
    assert job["dataset"]["fold"] == 1 and job["model"]["backbone"]["config"]["hidden_size"] == 32
    help_text = subprocess.run(
        [_console_script("emotion-eval"), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    ).stdout
    assert "checkpoint" in help_text and "--actors" in help_text and "--out" in help_text


def test_configs_are_found_in_a_built_wheel(tmp_path):
    """Build the wheel from a copy of the sources, install it with --target, compose from there."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    for package in ("core", "configs", "realtime", "export"):
        if (REPO / package).is_dir():
            shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((tmp_path / "dist").glob("*.whl"))
    target = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    installed = target / "emotion_monitor"
    assert (installed / "configs" / "model" / "tiny.yaml").is_file()
    # Data folders ship too: the VAD model (the runtime needs no silero-vad package) and the bundled head.
    assert (installed / "realtime" / "assets" / "silero_vad.onnx").is_file()
    assert (installed / "export" / "bundled" / "model.json").is_file()
    # emotion-serve's live page (package data, no build step).
    assert {"index.html", "app.js", "pcm-worklet.js", "style.css"} <= {
        p.name for p in (installed / "realtime" / "web").iterdir()
    }
    # One distinctive top-level name: no generic `core`, `export`, `realtime` or `configs` in site-packages.
    assert sorted(
        p.name for p in target.iterdir() if p.name != "bin" and not p.name.endswith(".dist-info")
    ) == ["emotion_monitor"]
    code = (
        "import sys, emotion_monitor.core.train as train, emotion_monitor.configs as configs;"
        f"assert train.__file__.startswith({str(target)!r}), train.__file__;"
        f"assert configs.__file__.startswith({str(target)!r}), configs.__file__;"
        "sys.argv = ['emotion-train', 'model=wavlm', '--cfg', 'job'];"
        "train.main()"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=run_dir, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    job = yaml.safe_load(result.stdout)
    assert job["model"]["backbone"]["kind"] == "wavlm" and job["train"]["loss"]["gamma"] == 1.0

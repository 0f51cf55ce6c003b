"""LR tiers, mixup with clean metrics, a real (tiny-model) training run on RAVDESS, reload, emotion-eval."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from support import recipe_train_settings, tiny_classifier, tiny_encoder_config
from torch import nn

import emotion_monitor.core.lightning_module as lm
from emotion_monitor.core.checkpoint import REQUIRED_HPARAMS, load_classifier
from emotion_monitor.core.emotions import EMOTIONS
from emotion_monitor.core.evaluate import main as eval_main
from emotion_monitor.core.hub import (
    BackboneUnavailable,
    build_backbone_from_config,
    check_backbone_available,
    hub_offline_if_unreachable,
    hub_reachable,
)
from emotion_monitor.core.lightning_module import EmotionModule, parameter_groups
from emotion_monitor.core.train import finish, fit, run
from emotion_monitor.realtime.audio import PreprocessOptions

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def make_module(**settings) -> EmotionModule:
    model = tiny_classifier(seed=0)
    return EmotionModule(
        model.spec(),
        list(EMOTIONS),
        16_000,
        1.0,
        PreprocessOptions().to_dict(),
        recipe_train_settings(**settings).to_dict(),
        model=model,
    )


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_parameter_groups_three_tiers_and_no_decay_on_norms_and_biases():
    module = make_module(lr=1e-3, weight_decay=0.05, freeze_layers=1)
    model = module.model
    groups = {g["name"]: g for g in parameter_groups(model, module.settings)}
    assert {name: g["lr"] for name, g in groups.items()} == pytest.approx(
        {
            "lower/decay": 1e-5,
            "lower/no_decay": 1e-5,
            "upper/decay": 1e-4,
            "upper/no_decay": 1e-4,
            "head/decay": 1e-3,
            "head/no_decay": 1e-3,
        }
    )
    assert all(g["weight_decay"] == (0.05 if name.endswith("/decay") else 0.0) for name, g in groups.items())
    layers = model.backbone.transformer_layers()
    lower = _ids(groups["lower/decay"]["params"] + groups["lower/no_decay"]["params"])
    upper = _ids(groups["upper/decay"]["params"] + groups["upper/no_decay"]["params"])
    head = _ids(groups["head/decay"]["params"] + groups["head/no_decay"]["params"])
    assert _ids(layers[0].parameters()) <= lower and _ids(layers[1].parameters()) <= upper
    assert _ids(model.backbone.model.feature_projection.parameters()) <= lower
    assert (
        _ids(model.features.parameters()) | _ids(model.head.parameters()) | {id(model.layer_logits)} == head
    )
    no_decay = _ids(p for name, g in groups.items() if name.endswith("no_decay") for p in g["params"])
    for name, p in model.named_parameters():
        if name.endswith("bias") or "layer_norm" in name or name == "layer_logits":
            assert id(p) in no_decay or not p.requires_grad, name
    # Every trainable parameter in exactly one group; the frozen CNN feature encoder in none.
    all_ids = [id(p) for g in groups.values() for p in g["params"]]
    assert len(all_ids) == len(set(all_ids))
    assert set(all_ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert not _ids(model.backbone.model.feature_extractor.parameters()) & set(all_ids)


def test_configure_optimizers_adamw_and_warm_restarts():
    module = make_module(lr=2e-3, freeze_layers=1, lr_scales={"lower": 0.0, "upper": 0.1, "head": 1.0})
    conf = module.configure_optimizers()
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingWarmRestarts)
    assert conf["lr_scheduler"]["interval"] == "step"
    assert sorted({g["name"].split("/")[0] for g in optimizer.param_groups}) == ["head", "upper"]
    # lr scale 0 = hard freeze of the lower tier.
    assert not any(p.requires_grad for p in module.model.backbone.transformer_layers()[0].parameters())
    assert all(p.requires_grad for p in module.model.backbone.transformer_layers()[1].parameters())


def test_training_prep_disables_layerdrop_and_unused_weights():
    from emotion_monitor.core.backbones import build_backbone
    from emotion_monitor.core.model import EmotionClassifier

    backbone = build_backbone("wav2vec2", None, config=tiny_encoder_config(layerdrop=0.5))
    model = EmotionClassifier(backbone, 8, (16,), layer_pooling="last")
    EmotionModule(model.spec(), list(EMOTIONS), train=recipe_train_settings().to_dict(), model=model)
    assert backbone.model.config.layerdrop == 0.0
    assert not model.layer_logits.requires_grad  # unused under "last": would break DDP


def _no_dropout(module: nn.Module) -> None:
    """Make train-mode forwards deterministic: no dropout, no wav2vec2 SpecAugment time masking."""
    module.backbone.model.config.mask_time_prob = 0.0
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def test_mixup_trains_on_mixed_batch_but_metrics_use_clean_predictions(monkeypatch):
    torch.manual_seed(0)
    module = make_module(mixup_alpha=0.4, mixup_prob=1.0, mixup_clean_forward=True)
    _no_dropout(module.model)
    module.model.train()
    seen = {}
    original = lm.mix_batch

    def spy(x, y, num_classes, alpha, generator=None):
        seen["x_mix"], seen["q_mix"], lam, perm = original(x, y, num_classes, alpha, generator)
        return seen["x_mix"], seen["q_mix"], lam, perm

    monkeypatch.setattr(lm, "mix_batch", spy)
    x, y = torch.randn(6, 16_000), torch.tensor([0, 1, 2, 3, 4, 5])
    module.model.head.eval()  # a submodule a backbone/head keeps in eval mode must stay so
    loss, metric_logits = module.mixup_step(x, y)
    assert module.model.training and not module.model.head.training  # modes restored per submodule
    module.model.head.train()
    module.model.eval()
    with torch.no_grad():
        clean, mixed = module.model(x), module.model(seen["x_mix"])
    module.model.train()
    assert torch.allclose(metric_logits, clean, atol=1e-5)
    assert not torch.allclose(metric_logits, mixed, atol=1e-3)
    # The loss is the focal loss of the train-mode forward of the mixed batch against mixed targets.
    expected = module.loss_fn(module.model(seen["x_mix"]), seen["q_mix"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert not torch.allclose(seen["q_mix"].argmax(-1).float(), seen["q_mix"].max(-1).values)

    # training_step feeds exactly the clean predictions into the training confusion matrix.
    module._confusion["train"].zero_()
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    module.training_step({"input_values": x, "label": y}, 0)
    cm = module._confusion["train"]
    assert int(cm.sum()) == 6
    module.model.eval()
    with torch.no_grad():
        pred = module.model(x).argmax(-1)
    assert all(cm[t, p] >= 1 for t, p in zip(y.tolist(), pred.tolist(), strict=True))


def test_mixup_without_clean_forward_leaves_mixed_batches_out_of_metrics(monkeypatch):
    module = make_module(mixup_alpha=0.4, mixup_prob=1.0, mixup_clean_forward=False)
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    module._confusion["train"].zero_()
    loss = module.training_step(
        {"input_values": torch.randn(4, 16_000), "label": torch.tensor([0, 1, 2, 3])}, 0
    )
    assert torch.isfinite(loss) and int(module._confusion["train"].sum()) == 0
    plain = make_module(mixup_alpha=0.0)
    monkeypatch.setattr(plain, "log", lambda *a, **k: None)
    plain._confusion["train"].zero_()
    plain.training_step({"input_values": torch.randn(4, 16_000), "label": torch.tensor([0, 1, 2, 3])}, 0)
    assert int(plain._confusion["train"].sum()) == 4


def compose_cfg(overrides: list[str]):
    with initialize_config_module(config_module="emotion_monitor.configs", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_fast_dev_run_on_real_ravdess(ravdess_16k, tmp_path):
    cfg = compose_cfg(
        [
            "model=tiny",
            f"data_dir={ravdess_16k}",
            f"output_dir={tmp_path}",
            "debug.fast_dev_run=true",
            "dataset.actors=[1,2,3,4,5,6,7,8]",
            "dataset.max_files_per_actor=2",
            "dataset.window_s=1.0",
            "dataset.batch_size=4",
            "trainer.enable_progress_bar=false",
        ]
    )
    trainer, module, _ = fit(cfg)
    assert trainer.global_step == 1 and trainer.state.finished
    assert all(torch.isfinite(p).all() for p in module.model.parameters())


@pytest.fixture(scope="module")
def trained_run(ravdess_16k, tmp_path_factory):
    """A 2-epoch tiny-model run on 10 actors × 4 files (1 s crops, mixup on)."""
    out = tmp_path_factory.mktemp("run")
    cfg = compose_cfg(
        [
            "model=tiny",
            f"data_dir={ravdess_16k}",
            f"output_dir={out}",
            "logger=[csv]",
            "train.max_epochs=2",
            "train.mixup.prob=1.0",
            "dataset.actors=[1,2,3,4,5,6,7,8,9,10]",
            "dataset.max_files_per_actor=4",
            "dataset.window_s=1.0",
            "trainer.enable_progress_bar=false",
        ]
    )
    trainer, module, datamodule = fit(cfg)
    summary = finish(cfg, trainer, module, datamodule, out)
    return out, trainer, module, datamodule, summary


def test_training_run_writes_a_contract_checkpoint(trained_run):
    out, trainer, module, datamodule, summary = trained_run
    best = Path(summary["best_checkpoint"])
    assert best == out / "checkpoints" / "best.ckpt" and (out / "checkpoints" / "last.ckpt").is_file()
    data = torch.load(best, weights_only=True)  # plain containers only
    hp = data["hyper_parameters"]
    assert set(REQUIRED_HPARAMS) | {"metrics", "train", "split"} <= set(hp)
    assert hp["labels"] == list(EMOTIONS) and hp["sample_rate"] == 16_000 and hp["window_s"] == 1.0
    assert hp["preprocessing"] == PreprocessOptions().to_dict()
    assert all(k.startswith("model.") for k in data["state_dict"])
    assert hp["metrics"]["val/macro_f1"] == pytest.approx(float(trainer.checkpoint_callback.best_model_score))
    assert hp["metrics"]["test/actors"] == datamodule.split["test"]
    assert "speaker-independent" in hp["metrics"]["protocol"]
    assert set(hp["split"]["actors"]["test"]).isdisjoint(hp["split"]["actors"]["train"])
    assert summary["test"]["num_samples"] == len(datamodule.datasets["test"])
    assert json.loads((out / "summary.json").read_text())["best_checkpoint"] == str(best)
    assert (out / "test_metrics.json").is_file() and (out / "test_confusion.png").is_file()
    with open(out / "csv" / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert {"val/macro_f1", "val/uar", "train/accuracy", "train/loss_epoch"} <= set(header)


def test_checkpoint_reloads_and_predicts_the_same(trained_run):
    out, _, module, datamodule, _ = trained_run
    reloaded, hparams = load_classifier(out / "checkpoints" / "last.ckpt")
    x = torch.stack([datamodule.datasets["val"][i]["input_values"] for i in range(4)])
    module.model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(x), module.model(x), atol=1e-5)
        via_lightning = EmotionModule.load_from_checkpoint(
            out / "checkpoints" / "last.ckpt", weights_only=True
        ).eval()
        assert torch.allclose(via_lightning(x), module.model(x), atol=1e-5)


def test_emotion_eval_writes_json_and_png(trained_run, ravdess_16k, tmp_path, capsys):
    out, _, _, datamodule, _ = trained_run
    best = out / "checkpoints" / "best.ckpt"
    assert eval_main([str(best), "--data-dir", str(ravdess_16k), "--out", str(tmp_path / "one")]) == 0
    report = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert report["actors"] == datamodule.split["test"]
    assert report["num_samples"] == 60 * len(datamodule.split["test"])  # every clip of the held-out actors
    assert (tmp_path / "one" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert 0.0 <= report["macro_f1"] <= 1.0 and len(report["confusion_matrix"]) == 8

    # Several checkpoints (k-fold style): per-fold files, pooled matrix, mean/std.
    args = [
        str(best),
        str(out / "checkpoints" / "last.ckpt"),
        "--data-dir",
        str(ravdess_16k),
        "--out",
        str(tmp_path / "k"),
    ]
    assert eval_main(args + ["--actors", "11", "12"]) == 0
    summary = json.loads((tmp_path / "k" / "metrics.json").read_text())
    assert len(summary["folds"]) == 2 and summary["num_samples"] == 2 * 120
    assert {"macro_f1_mean", "macro_f1_std", "uar_mean"} <= set(summary)
    assert (tmp_path / "k" / "fold0_metrics.json").is_file() and (tmp_path / "k" / "confusion.png").is_file()

    capsys.readouterr()
    assert eval_main([str(tmp_path / "missing.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such checkpoint" in err and len(err.splitlines()) == 1


def test_local_backbone_directory_error_is_clear(tmp_path):
    with pytest.raises(BackboneUnavailable, match="does not exist"):
        build_backbone_from_config(
            {"kind": "wav2vec2", "name_or_path": str(tmp_path / "nope"), "config": None}
        )


def _cli_env(**extra) -> dict:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_offline_hub_error_is_one_line(tmp_path, ravdess_16k, offline_hub_env):
    """The default wav2vec2-base, the hub unreachable, no cache, HF_HUB_OFFLINE not set: the hub is probed once
    and only the local cache is tried, so stderr is the one error line (no retry chatter), exit 2."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "emotion_monitor.core.train",
            "model=wav2vec",
            f"data_dir={ravdess_16k}",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
        env=_cli_env(**offline_hub_env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("emotion-train: error: cannot load backbone")
    assert "model.backbone.name_or_path=/local/dir" in lines[0]


def test_offline_hub_fails_before_torch_is_imported(tmp_path, offline_hub_env):
    """The offline check runs before the heavy imports: the error comes while torch is still unimported."""
    script = (
        "import sys; import emotion_monitor.core.train as t\n"
        "sys.argv = ['emotion-train', 'model=wav2vec', 'hydra.run.dir=run']\n"
        "try:\n    t.main()\nexcept SystemExit as exc:\n"
        "    print('exit', exc.code, 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=_cli_env(**offline_hub_env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip() == "exit 2 False", result.stdout + result.stderr[-2000:]
    assert "[not in the local cache]" in result.stderr


def test_a_cached_backbone_passes_the_offline_check(offline_hub_env, monkeypatch):
    monkeypatch.setattr(
        "emotion_monitor.core.hub.in_hub_cache", lambda name: name == "facebook/wav2vec2-base"
    )
    check_backbone_available({"backbone": {"name_or_path": "facebook/wav2vec2-base", "kind": "wav2vec2"}})
    with pytest.raises(BackboneUnavailable, match="not in the local cache"):
        check_backbone_available(
            {"backbone": {"name_or_path": "facebook/hubert-base-ls960", "kind": "hubert"}}
        )


def test_unreachable_hub_loads_offline_for_that_load_only(offline_hub_env):
    assert not hub_reachable()
    with hub_offline_if_unreachable("facebook/wav2vec2-base", "wav2vec2"):
        assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert "HF_HUB_OFFLINE" not in os.environ


@pytest.mark.parametrize(
    ("name", "kind", "env"),
    [
        ("/models/wav2vec2-base", "wav2vec2", {}),  # a local path: never the hub
        ("whisper-base", "whisper", {}),  # packaged weights
        (None, "wav2vec2", {}),
        ("facebook/wav2vec2-base", "wav2vec2", {"HF_HUB_OFFLINE": "1"}),  # already offline
        (
            "facebook/wav2vec2-base",
            "wav2vec2",
            {"HTTPS_PROXY": "http://proxy:3128"},
        ),  # left to the hub client
    ],
)
def test_hub_is_not_probed_when_it_cannot_matter(offline_hub_env, monkeypatch, name, kind, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("emotion_monitor.core.hub.hub_reachable", lambda *a, **k: pytest.fail("probed"))
    with hub_offline_if_unreachable(name, kind):
        assert os.environ.get("HF_HUB_OFFLINE") == env.get("HF_HUB_OFFLINE")


def test_run_returns_summary_for_fast_dev_run(ravdess_16k, tmp_path):
    cfg = compose_cfg(
        [
            "model=tiny",
            f"data_dir={ravdess_16k}",
            f"output_dir={tmp_path}",
            "debug.fast_dev_run=true",
            "dataset.actors=[1,2,3,4,5,6]",
            "dataset.max_files_per_actor=2",
            "dataset.window_s=0.5",
            "trainer.enable_progress_bar=false",
        ]
    )
    summary = run(cfg)
    assert summary["best_checkpoint"] is None and summary["world_size"] == 1
    assert (tmp_path / "summary.json").is_file()


@pytest.mark.slow
def test_ddp_two_cpu_processes(ravdess_16k, tmp_path):
    """trainer.strategy=ddp with 2 CPU processes: runs, syncs the validation confusion matrix, checkpoints."""
    run_dir = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "emotion_monitor.core.train",
            "model=tiny",
            f"data_dir={ravdess_16k}",
            f"hydra.run.dir={run_dir}",
            "num_threads=1",
            "logger=[csv]",
            "trainer.accelerator=cpu",
            "trainer.strategy=ddp",
            "trainer.devices=2",
            "trainer.num_nodes=1",
            "trainer.enable_progress_bar=false",
            "train.max_epochs=2",
            "dataset.actors=[1,2,3,4,5,6,7,8,9,10]",
            "dataset.max_files_per_actor=4",
            "dataset.window_s=1.0",
            "dataset.batch_size=4",
        ],
        cwd=tmp_path,
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    hp = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]
    # Both processes' predictions are counted: the all-reduced matrix covers every validation clip.
    assert hp["metrics"]["val/num_samples"] == summary["split"]["num_clips"]["val"]
    model, _ = load_classifier(run_dir / "checkpoints" / "best.ckpt")
    assert model.num_classes == 8


def test_gradient_checkpointing_still_trains_every_tier():
    from emotion_monitor.core.backbones import build_backbone
    from emotion_monitor.core.model import EmotionClassifier

    torch.manual_seed(0)
    backbone = build_backbone(
        "wav2vec2", None, config=tiny_encoder_config(num_hidden_layers=3), gradient_checkpointing=True
    )
    model = EmotionClassifier(backbone, 8, (16,))
    module = EmotionModule(
        model.spec(), list(EMOTIONS), train=recipe_train_settings(freeze_layers=1).to_dict(), model=model
    )
    model.train()
    module.loss_fn(model(torch.randn(4, 16_000)), torch.tensor([0, 1, 2, 3])).backward()
    for layer in backbone.transformer_layers():  # lower (layer 0) and upper tiers both receive gradients
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    assert all(p.grad is None for p in backbone.model.feature_extractor.parameters())  # CNN stays frozen

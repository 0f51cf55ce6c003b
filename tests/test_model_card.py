"""docs/model-card.md is generated from export/bundled/model.json, and it is never stale."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from emotion_monitor.core.model_card import CHECKOUT_CARD, GENERATOR, card_text, main, render
from emotion_monitor.core.paths import BUNDLE_DIR

REPO = Path(__file__).resolve().parents[1]


def test_the_committed_card_is_not_stale():
    """Fails when model.json (a new task=bundle run) or the generator changed without regenerating the card."""
    assert CHECKOUT_CARD == REPO / "docs" / "model-card.md"
    fresh = card_text(BUNDLE_DIR, CHECKOUT_CARD)
    assert CHECKOUT_CARD.read_text() == fresh, f"docs/model-card.md is stale: run {GENERATOR}"


def test_every_figure_comes_from_model_json():
    info = json.loads((BUNDLE_DIR / "model.json").read_text())
    card = render(info)
    ravdess = info["evaluation"]["kfold"]["ravdess"]["clip_all"]
    assert (
        f"| ravdess | clip_all | {ravdess['n']} | {ravdess['accuracy'][0]:.3f} ± {ravdess['accuracy'][1]:.3f} |"
        in card
    )
    changed = json.loads(json.dumps(info))
    changed["evaluation"]["kfold"]["ravdess"]["clip_all"]["accuracy"] = [0.5, 0.01]
    assert "| ravdess | clip_all | 1200 | 0.500 ± 0.010 |" in render(changed)


def test_new_report_sections_appear_without_new_code():
    """The full report (model.json's `evaluation`) renders section by section: metric tables by their shape, any
    other mapping as a table of its values, headed by a known title or by its key."""
    info = json.loads((BUNDLE_DIR / "model.json").read_text())
    row = {"accuracy": [0.61, 0.02], "macro_f1": [0.6, 0.03], "n": 40}
    info["evaluation"] = {
        "kfold": {"nemo": {"clip": row, "window": dict(row, n=90), "coverage": 0.9}},
        "leave_one_corpus_out_8_labels": {"ased": {"clip": dict(row, n=300)}},
        "calibration": {
            "ravdess": {"ece": 0.041, "temperature": 1.3},
            "nemo": {"ece": 0.09, "temperature": 1.1},
        },
        "one_mood_sessions": {
            "protocol": "one speaker, one emotion throughout",
            "blend": 0.7,
            "baseline": 0.8,
        },
        "calibration_loco": {
            "temperature": 1.42,
            "corpora": {"ased": {"clips": 300, "ece": 0.2, "label_shares": {"angry": [0.3, 0.125]}}},
        },
    }
    card = render(info)
    assert "### Speaker-independent 5-fold, mean ± std over folds" in card
    assert "| nemo | window | 90 (90% of clips) | 0.610 ± 0.020 | 0.600 ± 0.030 |" in card
    assert "### Leave one corpus out 8 labels" in card and "| ased | clip | 300 |" in card
    assert (
        "### Calibration" in card and "| | ece | temperature |" in card and "| nemo | 0.090 | 1.100 |" in card
    )
    assert "### One mood sessions" in card and "Protocol: one speaker, one emotion throughout" in card
    assert "| blend | 0.700 |" in card
    # Nested rows: a table of their plain values, their own mappings below; pairs are [mean, std] only for metrics.
    assert (
        "### Calibration of held-out corpora (leave one corpus out)" in card
        and "| temperature | 1.420 |" in card
    )
    assert "| ased | 300 | 0.200 |" in card and "| angry | 0.300 / 0.125 |" in card
    # Once the report travels whole, the model's own entries are not repeated as results.
    assert "Speaker-normalised (blend), 5-fold" not in card


def test_command_writes_and_checks_a_card(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE_DIR, bundle, ignore=shutil.ignore_patterns("*.safetensors"))
    out = tmp_path / "card.md"
    assert main(["--bundle", str(bundle), "--check", "-o", str(out)]) == 1  # missing = stale
    assert main(["--bundle", str(bundle), "-o", str(out)]) == 0
    assert "](bundle/confusion-ravdess.png)" in out.read_text()  # images relative to the card
    assert main(["--bundle", str(bundle), "--check", "-o", str(out)]) == 0
    info = json.loads((bundle / "model.json").read_text())
    info["trained_on"] = "something else"
    (bundle / "model.json").write_text(json.dumps(info))
    assert main(["--bundle", str(bundle), "--check", "-o", str(out)]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["--bundle", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line, no traceback


def test_check_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "emotion_monitor.core.model_card", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr

"""The bundled model's card, ``docs/model-card.md``, written from the bundle's ``model.json``.

    python -m emotion_monitor.core.model_card                         # export/bundled/ -> docs/model-card.md
    python -m emotion_monitor.core.model_card --bundle DIR -o card.md  # your own task=bundle output
    python -m emotion_monitor.core.model_card --check                 # exit 1 when the card is stale

Every figure comes from ``model.json`` (written by ``emotion-train experiment=head task=bundle``, which also
rewrites the card); the text around them (intended use, data, limitations) is fixed here. Result sections are
rendered generically: any entry of the report shaped ``{corpus: {level: {metric: [mean, std], n}}}`` becomes a
metrics table, any other mapping a table of its values, so a new section of the evaluation report appears in the
card without new code (a title in ``TITLES`` makes its heading read better; else the key names it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from emotion_monitor.core.paths import BUNDLE_DIR

CHECKOUT_CARD = Path(__file__).resolve().parents[1] / "docs" / "model-card.md"
"""Where the shipped bundle's card lives in a source checkout."""
GENERATOR = "python -m emotion_monitor.core.model_card"

MODEL_FIELDS = (
    "labels",
    "sample_rate",
    "window_s",
    "hop_s",
    "speech_gate",
    "weights",
    "num_classes",
    "hidden_dims",
    "dropout",
    "layer_pooling",
    "encoder_layers",
    "time_pooling",
    "layer_weights",
    "preprocessing",
    "trained_on",
    "train_config",
    "rebuild",
    "protocol",
    "reference_predictions",
)
"""``model.json`` entries that describe the model, not its evaluation: every other entry is a result section."""

TITLES = {
    "metrics": "Speaker-independent k-fold, mean ± std over folds",
    "kfold": "Speaker-independent k-fold, mean ± std over folds",
    "leave_one_corpus_out": "Leave one corpus out (trained on the other corpora, each on its own classes; one run, std 0)",
    "speaker_norm": "Speaker adaptation (blend), mixed sessions: running mean of what was heard (the live rule)",
    "speaker_norm.results": "Speaker-normalised (blend), k-fold",
    "speaker_norm.leave_one_corpus_out": "Speaker-normalised (blend), leave one corpus out",
    "speaker_norm_all": "Speaker-normalised head alone, each test speaker centred on all their clips",
    "speaker_norm_loco": "Leave one corpus out, speaker adaptation (blend), mixed sessions",
    "speaker_norm_all_loco": "Leave one corpus out, speaker-normalised head alone, centred on all their clips",
    "test_model": "The same k-fold heads on another encoder's clip windows (clip level)",
    "speaker_norm_one_mood": "Speaker adaptation (blend), one-mood sessions (each speaker's clips of one emotion)",
    "speaker_norm_one_mood_loco": "Leave one corpus out, speaker adaptation (blend), one-mood sessions",
    "calibration_loco": "Calibration of held-out corpora (leave one corpus out)",
}
"""Headings of known result sections by dotted key; an unknown section is headed by its key."""

METRICS = ("accuracy", "macro_f1", "weighted_f1", "uar")
MEAN_STD_KEYS = {*METRICS, "variant_accuracy", "delta"}
"""Keys whose two-number lists are ``[mean, std]`` over folds."""
METRIC_HEADINGS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1", "uar": "UAR"}

INTRO = """\
A frozen Whisper-base encoder (OpenAI, MIT) with a small classification head, exported to one ONNX file that
`emotion-live` and `emotion-score` run on a CPU. Read the results below before trusting a label: they are
measured on voices the heads never heard, under one protocol (`docs/evaluation.md`)."""

INTENDED_USE = """\
- **For:** watching the emotional tone of speech over time (a call, a talk, a recording session), research and
  demonstrations; comparing recordings of the same speaker (with `--speaker-baseline`).
- **Not for:** decisions about people (hiring, health, policing, credit, education), lie or intent detection,
  or any use where a wrong label harms someone. A label is an estimate of how acted emotional speech sounds,
  not of what a person feels."""

DATA = """\
Acted emotional speech in three languages: RAVDESS (North American English, two sentences, all eight labels;
CC BY-NC-SA 4.0), CREMA-D (English, twelve sentences, six emotions, speakers aged 20–74 of varied ethnicity;
ODbL), ASED (Amharic, 65 speakers each in their own dialect and room, five emotions, labels confirmed by
listeners) and nEMO (Polish, 9 actors, six emotions; CC BY-NC-SA 4.0), the last two as 20 kbit/s Ogg Opus. Each
file is used through its `emotion-score` windows (the clip view). Every class weighs the same within its corpus
and every corpus the same in the loss. Some speakers and corpora are held back and never used. A corpus that
lacks some of the eight labels is trained with those labels left out of its clips' softmax. Models trained on
RAVDESS or nEMO, including these heads, inherit their non-commercial licence."""

LIMITATIONS = """\
- Acted, read sentences. Expect lower accuracy on spontaneous (natural) or noisy speech, and on languages, voices
  and microphones far from these; leave-one-corpus-out above is the estimate for a corpus never heard, and the
  label shares under calibration show which labels it over-answers there.
- Accuracy varies strongly by speaker: see the ± over folds.
- Speaker adaptation (off by default) needs about 10 s of the speaker's speech first; it blends in the adapted
  head only as far as the speaker's plain estimates vary, so a speaker who keeps one mood loses little (the
  one-mood rows); `--speaker-baseline` judges against a calm recording instead, see `docs/live.md`.
- Live windows get an emotion only with enough speech (the speech gate above); short utterances get none.
- The eight labels are those of the corpora: other states (boredom, stress, sarcasm) are mapped onto them."""


def load_info(bundle_dir: Path) -> dict:
    """The bundle's ``model.json``."""
    path = Path(bundle_dir) / "model.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the bundle's model.json ({exc})") from None


def is_metric_table(node: Any) -> bool:
    """``{corpus: {level: {metric: [mean, std] | value, n}}}`` (an evaluation summary)."""
    if not isinstance(node, dict) or not node:
        return False
    for entry in node.values():
        if not isinstance(entry, dict):
            return False
        levels = [v for v in entry.values() if isinstance(v, dict)]
        if not levels or not all("accuracy" in level for level in levels):
            return False
    return True


def _number(value: Any, mean_std: bool = True) -> str:
    """A table cell: floats to 3 decimals, ``[mean, std]`` as ``mean ± std`` (when ``mean_std``), other lists
    spaced; ``|`` and newlines escaped."""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    if (
        mean_std
        and isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        return f"{value[0]:.3f} ± {value[1]:.3f}"
    if isinstance(value, list | tuple):
        return " ".join(_number(v, mean_std) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _setting(value: Any) -> str:
    """A configuration value as the YAML spells it (``null``, ``[512, 256]``, ``0.001``)."""
    return json.dumps(value) if not isinstance(value, str) else value


def metric_table(node: dict) -> list[str]:
    """Markdown rows of an evaluation summary: one per corpus and level that holds anything."""
    metrics = [
        m for m in METRICS if any(m in lv for e in node.values() for lv in e.values() if isinstance(lv, dict))
    ]
    extra = sorted(
        {k for e in node.values() for lv in e.values() if isinstance(lv, dict) for k in lv}
        - set(METRICS)
        - {"n", "confusion"}
    )
    columns = metrics + extra
    lines = [
        "| corpus | level | n | " + " | ".join(METRIC_HEADINGS.get(c, c) for c in columns) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for corpus, entry in node.items():
        for level, row in entry.items():
            if not isinstance(row, dict) or not row.get("n", 1):
                continue
            n = str(row.get("n", ""))
            if level == "window" and "coverage" in entry:
                n += f" ({entry['coverage']:.0%} of clips)"
            cells = " | ".join(_number(row[c]) if c in row else "" for c in columns)
            lines.append(f"| {corpus} | {level} | {n} | {cells} |")
    return lines


def _cell(key: str, value: Any) -> str:
    """A table cell for ``key``: ``[mean, std]`` pairs only under metric names (``MEAN_STD_KEYS``), other lists
    joined with `` / ``."""
    if key in MEAN_STD_KEYS:
        return _number(value)
    if isinstance(value, list | tuple):
        return " / ".join(_number(v, mean_std=False) for v in value)
    return _number(value, mean_std=False)


def value_table(node: dict) -> list[str]:
    """Markdown rows of ``{row: {column: value}}`` (the rows' non-mapping values), or of ``{key: value}``."""
    if all(isinstance(v, dict) for v in node.values()):
        columns = list(
            dict.fromkeys(k for v in node.values() for k, x in v.items() if not isinstance(x, dict))
        )
        lines = ["| | " + " | ".join(columns) + " |", "| --- | " + " | ".join("---" for _ in columns) + " |"]
        for key, row in node.items():
            lines.append(
                f"| {key} | " + " | ".join(_cell(c, row[c]) if c in row else "" for c in columns) + " |"
            )
        return lines
    lines = ["| | |", "| --- | --- |"]
    lines += [f"| {key} | {_cell(key, value)} |" for key, value in node.items()]
    return lines


def _title(path: tuple[str, ...], info: dict) -> str:
    """A known title (``TITLES``, by dotted key or last key), else the last key (after its parent's, below the
    top level) in words; ``k-fold`` names the fold count."""
    title = TITLES.get(".".join(path)) or TITLES.get(path[-1])
    if title is None:
        words = [part.replace("_", " ") for part in path[-2:] if len(path) > 1 or part == path[-1]]
        title = ": ".join(words)
        title = title[:1].upper() + title[1:]
    folds = (info.get("train_config") or {}).get("dataset", {}).get("num_folds")
    return title.replace("k-fold", f"{folds}-fold") if folds else title


def render_section(path: tuple[str, ...], node: Any, info: dict, depth: int = 3) -> list[str]:
    """One result section as Markdown: a metrics table when it has that shape; else its texts, a table of its
    plain values, one table of its entries that are rows of plain values (with their own nested entries as
    sub-sections), and its other entries as sub-sections."""
    heading = "#" * min(depth, 6) + " " + _title(path, info)
    if is_metric_table(node):
        return [heading, "", *metric_table(node), ""]
    if not isinstance(node, dict):
        return [heading, "", _cell(path[-1], node), ""]
    out = [heading, ""]
    texts = {k: v for k, v in node.items() if isinstance(v, str)}
    for key, text in texts.items():
        out += [f"{key.replace('_', ' ').capitalize()}: {text}", ""]
    scalars = {k: v for k, v in node.items() if k not in texts and not isinstance(v, dict)}
    if scalars:
        out += [*value_table(scalars), ""]
    children = {k: v for k, v in node.items() if isinstance(v, dict)}
    rows = {
        k: v
        for k, v in children.items()
        if not is_metric_table(v) and any(not isinstance(x, dict) for x in v.values())
    }
    if rows:
        out += [*value_table(rows), ""]
        for row, entry in rows.items():
            for key, nested in entry.items():
                if isinstance(nested, dict):
                    out += render_section((*path, row, key), nested, info, depth + 1)
    for key, child in children.items():
        if key not in rows:
            out += render_section((*path, key), child, info, depth + 1)
    return out


def result_sections(info: dict) -> dict:
    """The evaluation report's sections held in ``model.json``: its ``evaluation`` entry when there is one, else
    every entry that does not describe the model (``MODEL_FIELDS``)."""
    if isinstance(info.get("evaluation"), dict):
        return info["evaluation"]
    return {k: v for k, v in info.items() if k not in MODEL_FIELDS}


def _settings(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested config as (dotted key, value) pairs."""
    if isinstance(node, dict):
        return [pair for k, v in node.items() for pair in _settings(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), node)]


def render(info: dict, bundle_dir: Path = BUNDLE_DIR, link_base: str = "../export/bundled") -> str:
    """The card's Markdown from ``model.json``'s contents. ``link_base``: the bundle folder as seen from the card
    (for the confusion-matrix images; "" = the same folder)."""
    gate = info.get("speech_gate") or {}
    pre = info.get("preprocessing") or {}
    facts = {
        "Encoder": f"{info.get('weights')}, first {info.get('encoder_layers')} layers, frozen",
        "Head": (
            f"time `{info.get('time_pooling', 'mean')}` of every hidden state, layer pooling "
            f"`{info.get('layer_pooling')}` → MLP {'-'.join(str(d) for d in info.get('hidden_dims', []))} "
            f"(dropout {info.get('dropout')}) → {info.get('num_classes')} classes"
        ),
        "Labels": ", ".join(info.get("labels", [])),
        "Input": (
            f"{info.get('sample_rate')} Hz mono in {info.get('window_s')} s windows, hop {info.get('hop_s')} s; "
            f"trimmed {pre.get('trim_db')} dB below the peak, scaled to {pre.get('target_dbfs')} dBFS RMS "
            f"(gain at most {pre.get('max_gain_db')} dB)"
        ),
        "Speech gate": (
            f"a live window gets an emotion with at least {gate.get('min_speech_s')} s of speech that ended at "
            f"most {gate.get('max_trailing_silence_s')} s ago"
        ),
        "Trained on": info.get("trained_on", ""),
        "Protocol": info.get("protocol", ""),
        "Rebuild": f"`{info.get('rebuild', '')}`",
    }
    lines = [
        "# Model card: the bundled model",
        "",
        f"<!-- Generated by `{GENERATOR}` from {link_base + '/' if link_base else ''}model.json: do not edit; "
        "`emotion-train experiment=head task=bundle` rewrites both. -->",
        "",
        INTRO,
        "",
        "| | |",
        "| --- | --- |",
        *(f"| **{k}** | {_number(v, mean_std=False)} |" for k, v in facts.items()),
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Data",
        "",
        DATA,
        "",
        "## Results",
        "",
        "Levels `clip`/`window`: the top class among the classes of the test corpus; `clip_all`/`window_all`: the "
        "top class among every class the heads know, as the product answers (macro-F1 there counts labels the "
        "corpus lacks). Speaker-normalised rows use the test speaker's own unlabelled speech, so they are not "
        "single-clip inference.",
        "",
    ]
    for key, node in result_sections(info).items():
        lines += render_section((key,), node, info)
    images = [
        f"![{corpus}]({link_base + '/' if link_base else ''}confusion-{corpus}.png)"
        for corpus in (info.get("metrics") or {})
        if (Path(bundle_dir) / f"confusion-{corpus}.png").is_file()
    ]
    if images:
        lines += ["### Confusion matrices (clip level, summed over folds)", "", " ".join(images), ""]
    lines += ["## Limitations", "", LIMITATIONS, ""]
    settings = _settings(info.get("train_config") or {})
    if settings:
        lines += [
            "## Training configuration",
            "",
            "| setting | value |",
            "| --- | --- |",
            *(f"| `{k}` | {_setting(v)} |" for k, v in settings),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def card_path(bundle_dir: Path) -> Path:
    """Where a bundle's card goes: ``docs/model-card.md`` for the shipped bundle in a source checkout, else
    ``model-card.md`` inside the bundle folder."""
    if Path(bundle_dir).resolve() == BUNDLE_DIR and CHECKOUT_CARD.parent.is_dir():
        return CHECKOUT_CARD
    return Path(bundle_dir) / "model-card.md"


def card_text(bundle_dir: Path, out: Path) -> str:
    """The card of ``bundle_dir`` as it should read at ``out`` (image links relative to it)."""
    link_base = Path(os.path.relpath(Path(bundle_dir).resolve(), Path(out).resolve().parent)).as_posix()
    return render(load_info(bundle_dir), bundle_dir, "" if link_base == "." else link_base)


def write_card(bundle_dir: Path, out: Path | None = None) -> Path:
    """Render ``bundle_dir``'s card into ``out`` (default ``card_path``); returns the path written."""
    out = Path(out) if out is not None else card_path(bundle_dir)
    out.write_text(card_text(bundle_dir, out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=GENERATOR, description="Write the model card (Markdown) from a bundle's model.json."
    )
    parser.add_argument(
        "--bundle", type=Path, default=BUNDLE_DIR, help="bundle folder (default: export/bundled)"
    )
    parser.add_argument(
        "-o", "--out", type=Path, help="card file (default: docs/model-card.md for the shipped bundle)"
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the card is stale")
    args = parser.parse_args(argv)
    try:
        out = args.out or card_path(args.bundle)
        if args.check:
            if not out.is_file() or out.read_text() != card_text(args.bundle, out):
                print(f"{GENERATOR}: {out} is stale; regenerate it with {GENERATOR}", file=sys.stderr)
                return 1
            return 0
        print(write_card(args.bundle, out))
    except (OSError, ValueError) as exc:
        print(f"{GENERATOR}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

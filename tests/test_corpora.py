"""Corpus readers: RAVDESS, CREMA-D and a user's manifest yield the same records with the right classes."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from support import data_dir, synthetic_speechlike

from emotion_monitor.core.corpora import read_corpus
from emotion_monitor.core.data import DataError
from emotion_monitor.core.emotions import EMOTIONS


@pytest.fixture(scope="session")
def crema_d():
    path = data_dir() / "crema-d-16k"
    if not (path / "summaryTable.csv").is_file():
        pytest.skip(f"CREMA-D copy not found at {path} (set EMOTION_DATA_DIR)")
    return path


def corpus_folder(name: str, marker: str):
    path = data_dir() / name
    if not (path / marker).exists():
        pytest.skip(f"{name} copy not found at {path} (set EMOTION_DATA_DIR)")
    return path


def test_ased_reader_has_65_speakers_and_five_classes_and_decodes_opus():
    from emotion_monitor.realtime.audio import load_audio

    corpus = read_corpus("ased", corpus_folder("ased-16k", "01Neutral"))
    assert len(corpus.utterances) == 2474 and len(corpus.speakers) == 65 and not corpus.problems
    assert [EMOTIONS[c] for c in corpus.classes] == ["neutral", "happy", "sad", "angry", "fearful"]
    by_name = {u.path.name: u for u in corpus.utterances}
    # The one file whose emotion letter is upper case (README) is still read, from its folder.
    odd = by_name["S4-04-02-01-29.opus"]
    assert odd.label == EMOTIONS.index("sad") and odd.speaker == "ased:29" and odd.corpus == "ased"
    assert by_name["n1-01-01-01-01.opus"].label == EMOTIONS.index("neutral")
    # Ogg Opus decodes at 48 kHz; the one preprocessing path brings it to the model's 16 kHz.
    audio = load_audio(odd.path, 16_000)
    assert audio.dtype == np.float32 and 0.5 < len(audio) / 16_000 < 15 and np.abs(audio).max() > 0.01


def test_nemo_reader_takes_speakers_and_labels_from_its_table():
    corpus = read_corpus("nemo", corpus_folder("nemo-16k", "data.tsv"))
    assert len(corpus.utterances) == 2245 and len(corpus.speakers) == 9 and not corpus.problems
    assert [EMOTIONS[c] for c in corpus.classes] == [
        "neutral",
        "happy",
        "sad",
        "angry",
        "fearful",
        "surprised",
    ]
    by_name = {u.path.name: u for u in corpus.utterances}
    # data.tsv pads speaker ids with spaces: they are stripped.
    assert by_name["WR0_surprised_64.opus"].speaker == "nemo:WR0"
    assert by_name["WR0_surprised_64.opus"].label == EMOTIONS.index("surprised")
    assert by_name["EB0_anger_10.opus"].label == EMOTIONS.index("angry")


def test_new_corpus_readers_report_bad_rows_and_missing_folders(tmp_path):
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "AB0_anger_1.opus").write_bytes(b"")
    (tmp_path / "data.tsv").write_text(
        "file_id\temotion\traw_text\tnormalized_text\tspeaker_id\tgender\tage\n"
        "AB0_anger_1.opus\tanger\tx\tx\t  AB0\tmale\t20\n"
        "AB0_calm_2.opus\tcalm\tx\tx\tAB0\tmale\t20\n"
        "AB0_fear_3.opus\tfear\tx\tx\tAB0\tmale\t20\n"
    )
    corpus = read_corpus("nemo", tmp_path)
    assert [u.speaker for u in corpus.utterances] == ["nemo:AB0"]
    assert sorted(p.reason.split(" ")[0] for p in corpus.problems) == ["emotion", "no"]
    (tmp_path / "01Neutral").mkdir()
    (tmp_path / "01Neutral" / "h3-01-01-01-01.opus").write_bytes(b"")
    (tmp_path / "01Neutral" / "n1-01-01-01-02.opus").write_bytes(b"")
    ased = read_corpus("ased", tmp_path)
    assert [u.speaker for u in ased.utterances] == ["ased:02"]
    assert "folder is 01Neutral" in ased.problems[0].reason
    with pytest.raises(DataError, match="ASED directory not found"):
        read_corpus("ased", tmp_path / "nowhere")
    with pytest.raises(DataError, match="nEMO table not found"):
        read_corpus("nemo", tmp_path / "nowhere")


def test_ravdess_reader_has_20_speakers_and_all_eight_classes(ravdess_16k):
    corpus = read_corpus("ravdess", ravdess_16k)
    assert len(corpus.utterances) == 1200 and len(corpus.speakers) == 20
    assert corpus.classes == tuple(range(8)) and not corpus.problems
    first = corpus.utterances[0]
    assert first.speaker == "ravdess:01" and first.corpus == "ravdess" and first.agreement == 1.0


def test_crema_d_reader_maps_six_classes_and_crowd_agreement(crema_d):
    corpus = read_corpus("crema-d", crema_d)
    assert len(corpus.utterances) == 3760 and len(corpus.speakers) == 46
    assert [EMOTIONS[c] for c in corpus.classes] == ["neutral", "happy", "sad", "angry", "fearful", "disgust"]
    by_name = {u.path.stem: u for u in corpus.utterances}
    # summaryTable.csv: 1001_IEO_HAP_LO was heard as neutral by the audio-only majority.
    assert by_name["1001_IEO_HAP_LO"].label == EMOTIONS.index("happy")
    assert by_name["1001_IEO_HAP_LO"].agreement == 0.0
    assert by_name["1001_IEO_NEU_XX"].agreement == 1.0
    # docs/evaluation.md: the audio-only majority matches the intended emotion on about 42 % of clips.
    assert 0.35 < np.mean([u.agreement for u in corpus.utterances]) < 0.5


def test_crema_d_reader_reports_names_it_cannot_parse(tmp_path):
    for name in ("1001_DFA_ANG_XX", "1002_DFA_XYZ_XX", "notes"):
        sf.write(tmp_path / f"{name}.flac", synthetic_speechlike(0.5), 16_000)
    corpus = read_corpus("crema-d", tmp_path)
    assert [u.path.stem for u in corpus.utterances] == ["1001_DFA_ANG_XX"]
    assert sorted(p.path.stem for p in corpus.problems) == ["1002_DFA_XYZ_XX", "notes"]


def test_manifest_reader_resolves_paths_and_reports_bad_rows(tmp_path):
    (tmp_path / "audio").mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / "audio" / name, synthetic_speechlike(0.5), 16_000)
    manifest = tmp_path / "mine.csv"
    manifest.write_text(
        "path,label,speaker\naudio/a.wav,Happy,alice\naudio/b.wav,sad,bob\naudio/c.wav,sad,bob\n"
        "audio/a.wav,bored,alice\naudio/b.wav,angry,\n"
    )
    corpus = read_corpus("manifest", manifest)
    assert corpus.name == "mine"
    assert [(u.path.name, EMOTIONS[u.label], u.speaker) for u in corpus.utterances] == [
        ("a.wav", "happy", "mine:alice"),
        ("b.wav", "sad", "mine:bob"),
    ]
    assert corpus.classes == (EMOTIONS.index("happy"), EMOTIONS.index("sad"))
    assert sorted(p.reason for p in corpus.problems) == [
        "label 'bored' is not one of " + ", ".join(EMOTIONS),
        "no speaker",
        "no such file",
    ]


def test_manifest_without_the_columns_is_one_clear_error(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,emotion\nx.wav,happy\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['label', 'path', 'speaker'\]"):
        read_corpus("manifest", manifest)
    with pytest.raises(DataError, match="unknown corpus kind"):
        read_corpus("timit", tmp_path)

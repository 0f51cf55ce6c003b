"""The README stays a short entry point whose commands are the ones CI runs, and every link in the docs resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *DOCS]
DEMO = "bash .ci/setup && .venv/bin/emotion-live --input ../shared/data/ravdess-16k/Actor_01/03-01-05-02-01-01-01.flac"
TESTS = 'bash .ci/setup && .venv/bin/python -m pytest -m "not slow"'
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_readme_is_short_and_its_commands_are_the_ones_ci_runs():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert DEMO in readme and TESTS in readme
    assert any(line.startswith(TESTS) for line in (REPO / ".ci" / "run").read_text().splitlines())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    missing = []
    for target in LINK.findall(re.sub(r"```.*?```", "", page.read_text(), flags=re.S)):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or anchor and file.suffix == ".md" and anchor not in anchors(file):
            missing.append(target)
    assert not missing, f"{page.name}: broken links {missing}"


def test_help_epilogs_point_to_docs_that_exist():
    from emotion_monitor.realtime import live, score

    for epilog in (live.EPILOG, score.EPILOG):
        named = re.findall(r"docs/[\w-]+\.md", epilog)
        assert named and all((REPO / name).is_file() for name in named)


def test_readme_headline_figures_are_the_bundled_models():
    """The README's headline rows (clip accuracy as the product answers, argmax over all labels, per corpus) are
    model.json's k-fold, leave-one-corpus-out and speaker-adaptation figures: a new task=bundle run that changes
    them fails here until the README follows."""
    import json

    report = json.loads((REPO / "export" / "bundled" / "model.json").read_text())["evaluation"]
    rows = {
        "a single clip of a new speaker": report["kfold"],
        "a corpus never trained on": report["leave_one_corpus_out"],
        "with speaker adaptation, a speaker in many moods": report["speaker_norm"],
        "with speaker adaptation, a speaker in one mood": report["speaker_norm_one_mood"],
    }
    readme = (REPO / "README.md").read_text()
    for start, section in rows.items():
        line = next(line for line in readme.splitlines() if line.startswith(f"| {start}"))
        expected = [
            f"{section[c]['clip_all']['accuracy'][0]:.2f}" for c in ("ravdess", "crema-d", "ased", "nemo")
        ]
        assert line.split("|")[2:6] == [f" {x} " for x in expected], line


def test_configuration_page_lists_every_config_option():
    """docs/configuration.md's group table names exactly the YAML files of each group in configs/."""
    table = {}
    for line in (REPO / "docs" / "configuration.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and (REPO / "configs" / cells[0].strip("`")).is_dir():
            table[cells[0].strip("`")] = set(re.findall(r"`([\w-]+)`", cells[1]))
    groups = {p.name for p in (REPO / "configs").iterdir() if p.is_dir() and list(p.glob("*.yaml"))}
    assert set(table) == groups
    for group, options in table.items():
        assert options == {p.stem for p in (REPO / "configs" / group).glob("*.yaml")}, group

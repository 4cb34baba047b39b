"""The docs stay true to the data: every rendered table agrees with its results files, every link and
anchor resolves, every documented command names scripts, make targets and flags that exist, and the
pages speak of the project alone. The renderers (``dsanet_lab.pages``) show what the files hold: no
variant name, no decision and no Makefile lives in their code."""
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from dsanet_lab import pages
from dsanet_lab.pages import captions, paper, shipped

REPO = Path(__file__).resolve().parents[1]
PAGES_PACKAGE = REPO / "projects" / "DSANet" / "dsanet_lab" / "pages"
RENDER_TOOL = REPO / "tools" / "render_docs.py"
RESULTS = REPO / "benchmarks" / "results"


@functools.lru_cache(maxsize=None)
def tracked_markdown() -> Tuple[Path, ...]:
    """Every tracked markdown file (every markdown file outside .git/.venv/output without git)."""
    try:
        names = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return tuple(pages.pages(REPO))
    return tuple(REPO / name for name in names if (REPO / name).exists())


def docs_pages() -> Tuple[Path, ...]:
    """The pages people read: tracked markdown outside the kept results (a study's summary.md is a
    measurement, written by the tool that made it)."""
    return tuple(page for page in tracked_markdown() if RESULTS not in page.parents)


FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
RENDERED = re.compile(r"<!-- render: [\w.-]+ -->.*?<!-- /render -->", re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def prose(text: str, keep_rendered: bool = True) -> str:
    """A page's text without fenced code blocks and inline code (and without rendered blocks unless
    ``keep_rendered``); line numbers are kept by blanking what is dropped."""
    blank = lambda match: "\n" * match.group(0).count("\n")  # noqa: E731
    text = FENCE.sub(blank, text)
    if not keep_rendered:
        text = RENDERED.sub(blank, text)
    return INLINE_CODE.sub("", text)


# ---------------------------------------------------------------- rendered tables agree with their files
def test_every_rendered_table_agrees_with_its_results_files():
    """What ``tools/render_docs.py --check`` checks, in-process."""
    assert pages.process(REPO, check=True) == []


def test_every_registered_table_is_on_a_page_and_every_marker_is_registered():
    rendered = {match.group(2) for page in tracked_markdown() for match in pages.BLOCK.finditer(page.read_text())}
    assert rendered == set(pages.TABLES)


def test_every_registered_file_exists():
    for name, spec in pages.TABLES.items():
        for relative in spec.sources + spec.inputs:
            assert (REPO / pages.source_path(relative)).is_file(), (name, relative)


@pytest.fixture
def docs_copy(tmp_path):
    """The pages, the kept results and every other file a table is rendered from, copied with their
    layout into a scratch root."""
    for page in tracked_markdown():
        target = tmp_path / page.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, target)
    shutil.copytree(RESULTS, tmp_path / "benchmarks" / "results", dirs_exist_ok=True)
    shutil.copy(REPO / paper.PAPER_TABLES, tmp_path / paper.PAPER_TABLES)
    for spec in pages.TABLES.values():
        for relative in spec.sources + spec.inputs:
            source = REPO / pages.source_path(relative)
            if source.is_file() and not (tmp_path / pages.source_path(relative)).exists():
                (tmp_path / pages.source_path(relative)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, tmp_path / pages.source_path(relative))
    return tmp_path


def _table_lines(body: str, page_text: str) -> List[str]:
    """The table rows of a block that hold a digit and appear once on the page (not a shared header)."""
    return [line for line in body.splitlines()
            if line.startswith("| ") and re.search(r"\d", line) and page_text.count(line) == 1]


def _first_table_line(text: str, name: str) -> str:
    """The first table row of block ``name`` on a page that holds a digit and is unique on the page."""
    return _table_lines(next(m.group(3) for m in pages.BLOCK.finditer(text) if m.group(2) == name), text)[0]


def _bump_a_digit(line: str) -> str:
    """``line`` with its last digit changed."""
    position = max(i for i, char in enumerate(line) if char.isdigit())
    return line[:position] + str((int(line[position]) + 1) % 10) + line[position + 1:]


def test_check_names_the_table_whose_page_number_was_edited(docs_copy):
    """On every page with tables: a digit edited in its first table is reported, naming that table alone."""
    assert pages.process(docs_copy, check=True) == []
    for page in tracked_markdown():
        copy = docs_copy / page.relative_to(REPO)
        text = copy.read_text()
        name = next((m.group(2) for m in pages.BLOCK.finditer(text) if _table_lines(m.group(3), text)), None)
        if name is None:
            continue
        line = _first_table_line(text, name)
        copy.write_text(text.replace(line, _bump_a_digit(line), 1))
        report = pages.process(docs_copy, check=True)
        assert len(report) == 1 and report[0].startswith(f"{page.relative_to(REPO)}: table '{name}'"), report
        copy.write_text(text)


def test_check_names_the_tables_of_an_edited_results_file(docs_copy):
    path = docs_copy / "benchmarks" / "results" / "study_fcos" / "results.json"
    data = json.loads(path.read_text())
    data["differences"][0]["AP"]["mean"] += 0.01
    path.write_text(json.dumps(data, indent=2))
    named = {name for name, spec in pages.TABLES.items() if "study_fcos/results.json" in spec.sources}
    report = pages.process(docs_copy, check=True)
    assert {re.search(r"table '([\w.-]+)'", line).group(1) for line in report} == named


def test_the_command_restores_an_edited_page(docs_copy):
    page = docs_copy / "projects" / "DSANet" / "docs" / "STUDIES.md"
    original = page.read_text()
    line = _first_table_line(original, "study_benchmark_3seeds")
    page.write_text(original.replace(line, _bump_a_digit(line), 1))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    tool = [sys.executable, str(RENDER_TOOL), "--root", str(docs_copy)]
    result = subprocess.run(tool + ["--check"], capture_output=True, text=True, env=env)
    assert result.returncode == 1 and "STUDIES.md: table 'study_benchmark_3seeds'" in result.stdout
    subprocess.run(tool, check=True, capture_output=True, env=env)
    assert subprocess.run(tool + ["--check"], capture_output=True, env=env).returncode == 0
    assert page.read_text() == original


def test_an_unknown_marker_is_an_error(docs_copy):
    page = docs_copy / "README.md"
    page.write_text(page.read_text() + "\n<!-- render: no_such_table -->\n<!-- /render -->\n")
    result = subprocess.run([sys.executable, str(RENDER_TOOL), "--root", str(docs_copy), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "no_such_table" in result.stderr


# ---------------------------------------------------------------- the renderers decide nothing
def _variant_names() -> Set[str]:
    """Every variant name of every kept study, and every variant the paper file maps to a row."""
    names = set(json.loads((REPO / paper.PAPER_TABLES).read_text())["variants"])
    for path in RESULTS.rglob("*.json"):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            names |= {variant["name"] for variant in data.get("variants") or []}
            names |= {name for row in data.get("rows") or [] if isinstance(row, dict)
                      for name in (row.get("first"), row.get("second")) if isinstance(name, str)}
    return names


# A results file's path in the registry is where the file lies, not what the renderers say.
RESULTS_FILE_LITERAL = re.compile(r"""(["'])[\w./-]+\.json\1""")


def _renderer_code() -> Dict[str, str]:
    files = sorted(PAGES_PACKAGE.glob("*.py")) + [RENDER_TOOL]
    return {str(path.relative_to(REPO)): RESULTS_FILE_LITERAL.sub('""', path.read_text()) for path in files}


def test_renderers_name_no_variant_and_read_no_makefile():
    names = _variant_names()
    assert {"dsanet", "retinanet", "dsanet_conf"} <= names
    for path, code in _renderer_code().items():
        literals = set(re.findall(r"""["']([\w.-]+)["']""", code))
        assert literals & names == set(), f"{path} names variants: {sorted(literals & names)}"
        assert "Makefile" not in code, f"{path} reads the Makefile"
        assert not re.search(r"\brule\b|\bdemo\b", code, re.I), f"{path} speaks of a rule or of the demo"


def _paper_study(differences: Dict[str, Tuple[float, float, float]], extra=()) -> dict:
    """A study whose first variant is the paper's baseline model, and ``{variant: (mean, low, high)}``
    against it over two seeds; ``extra`` adds (variant, against, mean, low, high) pairs."""
    def record(name, against, mean, low, high):
        return {"variant": name, "against": against,
                "AP": {"mean": mean, "ci_low": low, "ci_high": high, "n": 2, "per_seed": {"0": mean, "1": mean}},
                "decomposition": {"training_half": 0.1, "validation_half": 0.2, "total_half": (high - low) / 2,
                                  "total_low": low, "total_high": high, "needed": {"1.0": {"seeds": 2}}}}

    names = ["baseline_model", *differences]
    diffs = [record(name, "baseline_model", *values) for name, values in differences.items()]
    diffs += [record(*pair) for pair in extra]
    return {"variants": [{"name": n} for n in names], "differences": diffs,
            "runs": [{"variant": n, "seed": s, "metrics": {"AP": 1.0}, "seconds": 600.0} for n in names for s in (0, 1)]}


def _rows(text: str) -> Dict[str, List[str]]:
    return {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                           for line in text.splitlines() if line.startswith("| "))}


def test_the_paper_study_shows_each_difference_beside_the_papers_from_the_data():
    """Each row holds the paper's difference for its row in the paper file and the measured interval;
    the sign column compares the two; every pair of the study's own (``--compare``) gets a line."""
    quoted = json.loads((REPO / paper.PAPER_TABLES).read_text())
    rows_of = {name: entry for name, entry in quoted["variants"].items()}
    measured = {name: ((-0.5, -0.9, -0.1) if i % 2 else (0.8, 0.2, 1.4)) for i, name in enumerate(rows_of)}
    first, second = list(rows_of)[:2]
    study = _paper_study(measured, extra=[(first, second, 5.0, 2.0, 8.0)])
    text = paper.study_paper(study, quoted)
    table = _rows(text)
    for name, (mean, low, high) in measured.items():
        place, delta = paper.paper_difference(quoted, name)
        row = table[name]
        assert row[1] == place and row[5] == f"[{low:.2f}, {high:.2f}]"
        assert row[6] == paper.sign_agreement(delta, low, high)
        if delta is not None:
            assert row[2] == f"{delta:+.1f}" and row[6] == ("yes" if (low > 0) == (delta > 0) else "no")
    bullets = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(bullets) == len(measured) + 1
    assert first in bullets[-1] and second in bullets[-1] and "+5.00" in bullets[-1]
    assert not re.search(r"\brule\b|\bdefault", text)


def test_a_difference_waits_for_two_seeds():
    quoted = json.loads((REPO / paper.PAPER_TABLES).read_text())
    name = next(iter(quoted["variants"]))
    study = _paper_study({name: (1.0, 0.5, 1.5)})
    study["differences"][0]["AP"]["n"] = 1
    row = _rows(paper.study_paper(study, quoted))[name]
    assert row[3] == "+1.00 (1 seed)" and row[5] == "—"


def _headline_study(low: float, high: float) -> dict:
    """A two-variant study whose v - base difference has the total interval [low, high], over 9 runs on 2 setups."""
    noise = {"mean": (low + high) / 2, "low": low, "high": high, "half": (high - low) / 2, "dof": 7, "run_sd": 0.8,
             "setup_sd": 0.0, "runs": 9, "setups": {"this study": {"n": 7, "mean": 0.0}, "threads2": {"n": 2, "mean": 0.0}}}
    parts = {"mean": (low + high) / 2, "runs": 9, "total_low": low, "total_high": high, "total_half": (high - low) / 2,
             "training_half": 0.6, "validation_half": 0.3}
    return {"variants": [{"name": "base"}, {"name": "v"}], "noise": {"base": noise, "v": noise},
            "differences": [{"variant": "v", "against": "base", "AP": {"mean": 0.0, "n": 7}, "noise": noise,
                             "decomposition": parts}]}


def test_the_headline_says_first_in_words_whether_the_benchmark_tells_the_models_apart():
    from dsanet_lab.pages import setups

    assert setups.headline(_headline_study(-0.4, 1.2)).startswith(
        "The embedded benchmark does not tell v from base: +0.40 AP, 95% interval [-0.40, 1.20]")
    above = setups.headline(_headline_study(0.3, 1.9))
    assert above.startswith("On the embedded benchmark, v is better than base: +1.10 AP") and "9 paired runs on 2 setups" in above
    rerun = setups.reproduction(_headline_study(0.3, 1.9))
    assert "the v - base difference" in rerun and "the mean of 7 seeds" in rerun


def test_a_rerun_at_an_old_commit_says_whose_digits_it_gives():
    """The first headline's cause: its commit retrained gives this study's AP (the code is not at fault)
    or the kept AP; the sentence must follow the numbers, not assume."""
    from dsanet_lab.pages import setups

    def study(ap):
        return {"runs": [{"variant": "r", "seed": 0, "metrics": {"AP": ap}}]}
    rerun = {"provenance": {"code": {"commit": "abcdef0123"}}, **study(77.5)}
    assert "this study's AP to the last digit: yes; the kept AP: no" in setups.first_commit_rerun(study(76.2), rerun, study(77.5))
    assert "this study's AP to the last digit: no; the kept AP: yes" in setups.first_commit_rerun(study(77.5), rerun, study(76.2))


def test_a_recipe_study_compares_with_its_own_first_variant():
    """The reference column of the recipe table is the study's first variant, whatever its name."""
    data = json.loads((RESULTS / "study_small_custom" / "results.json").read_text())
    data = json.loads(json.dumps(data).replace('"old_recipe"', '"reference_x"'))
    text = pages.TABLES["study_small_custom"].render(data)
    assert "ΔAP vs reference_x" in text and "old_recipe" not in text


# ---------------------------------------------------------------- the quick start's tables
def _ten_numbers(first: float) -> Dict[str, float]:
    return {name: first + i for i, name in enumerate(shipped.COCO_METRICS)}


def _quick_start_records() -> Dict[str, dict]:
    """A trained model's metrics.json, a make demo record and a make setup record, as their writers
    lay them out (numbers made up), by registered table."""
    from dsanet_lab.provenance import provenance

    return {
        "trained_model": {"config": "configs/x.py", "weights": "some/folder/model_final_0123abcd.pth",
                          "size_bytes": 2_500_000, "dtype": "float16", "metrics": _ten_numbers(50.0),
                          "accuracy_test": {"images": 20, "threads": 1, "AP": 61.0, "AP50": 90.0, "AP75": 70.5,
                                            "detections": [[[1, 2, 30, 40, 0.9, 0]] * 5, [[5, 6, 50, 60, 0.8, 2]] * 4]},
                          "provenance": provenance("python tools/x.py")},
        "make_demo": {"command": "make demo", "wall_seconds": 431.7, "metrics": _ten_numbers(40.0),
                      "provenance": provenance("make demo")},
        "make_setup": {"command": "make setup", "wall_seconds": 45.0, "download_bytes": 812_300_000,
                       "venv_bytes": 2_310_000_000, "provenance": provenance("make setup")},
    }


def test_the_trained_model_table_shows_its_file_its_ten_numbers_and_what_the_test_pins():
    record = _quick_start_records()["trained_model"]
    rows = _rows(shipped.trained_model(record))
    assert rows["`model_final_0123abcd.pth` (float16, 2.5 MB), validation split"][1:] == [
        f"{value:.1f}" for value in record["metrics"].values()]
    pinned = rows["accuracy test: 20 images, 1 torch thread, 9 detections of its first 2 images"]
    assert pinned[1:4] == ["61.0", "90.0", "70.5"] and set(pinned[4:]) == {"—"}
    record["accuracy_test"].update(images=["a.jpg", "b.jpg", "c.jpg"], detections=7)  # listed, or counted
    assert "accuracy test: 3 images, 1 torch thread, 7 detections |" in shipped.trained_model(record)


def test_the_make_tables_show_wall_time_and_what_the_run_measured_or_installed():
    records = _quick_start_records()
    demo_row = _rows(shipped.timed_run(records["make_demo"]))["`make demo`"]
    assert demo_row[1] == "7.2 min" and demo_row[2:] == [f"{v:.1f}" for v in records["make_demo"]["metrics"].values()]
    assert _rows(shipped.setup_run(records["make_setup"]))["`make setup`"][1:] == ["45 s", "812.3 MB", "2.31 GB"]


def test_the_quick_start_tables_render_and_check_from_their_files(docs_copy):
    """Their files in place and their markers on the README: rendered, then agreeing with --check, with a
    caption linking each file from the page; a number changed in a file is caught."""
    readme = docs_copy / "README.md"
    text = readme.read_text()
    for name, record in _quick_start_records().items():
        path = docs_copy / pages.source_path(pages.TABLES[name].sources[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
        if f"<!-- render: {name} -->" not in text:
            text += f"\n<!-- render: {name} -->\n<!-- /render -->\n"
    readme.write_text(text)
    pages.process(docs_copy, check=False)
    assert pages.process(docs_copy, check=True) == []
    rendered = readme.read_text()
    assert "| `make demo` | 7.2 min |" in rendered and "| `make setup` | 45 s |" in rendered
    for name in ("trained_model", "make_demo", "make_setup"):
        assert f"]({pages.source_path(pages.TABLES[name].sources[0])})" in rendered, name
    demo_file = docs_copy / pages.source_path(pages.TABLES["make_demo"].sources[0])
    demo_file.write_text(json.dumps({**_quick_start_records()["make_demo"], "wall_seconds": 99.0}))
    assert [line for line in pages.process(docs_copy, check=True) if "'make_demo'" in line]


# ---------------------------------------------------------------- captions
def test_captions_state_command_machine_and_date():
    from dsanet_lab.provenance import cpu_summary, provenance

    record = {"provenance": provenance("python benchmarks/speed.py --output out")}
    line = captions.caption([("benchmarks/results/x.json", record)], REPO / "benchmarks" / "README.md", REPO)
    machine = record["provenance"]["machine"]
    assert "`python benchmarks/speed.py --output out`" in line and record["provenance"]["date"] in line
    assert cpu_summary(machine["cpu"]) in line and captions.threads(machine["torch_threads"]) in line
    assert "](results/x.json)" in line
    assert "machine not recorded" in captions.caption([("a.json", {})], REPO / "README.md", REPO)


def test_a_study_caption_names_the_setup_its_runs_trained_on():
    """The invocation that writes a study's report may use other threads than its runs (--threads 1)."""
    from dsanet_lab.provenance import provenance

    invocation = provenance("python tools/compare_variants.py")
    one_thread = {"machine": {**invocation["machine"], "torch_threads": 1}}
    study = {"provenance": {**invocation, "machine": {**invocation["machine"], "torch_threads": 2}},
             "runs": [{"variant": "a", "seed": s, "setup": one_thread} for s in (0, 1)]}
    line = captions.caption([("r.json", study)], REPO / "README.md", REPO)
    assert "machine of every run: " in line and "1 torch thread;" in line and "2 torch threads" not in line
    study["runs"][1]["setup"] = {"machine": {**invocation["machine"], "torch_threads": 2}}
    assert "runs on 2 setups" in captions.caption([("r.json", study)], REPO / "README.md", REPO)


# ---------------------------------------------------------------- the paper's rows
def test_every_coco_and_ablation_config_is_listed_beside_the_papers_row():
    """Every config of configs/COCO-Detection and configs/Ablations is in the paper file, every quoted row
    is one of the paper's tables, and each rendered row links its configs from its page and shows the
    quoted AP."""
    quoted = json.loads((REPO / paper.PAPER_TABLES).read_text())
    for group, folder, page in (("coco", "COCO-Detection", REPO / "README.md"),
                                ("ablations", "Ablations", REPO / "projects" / "DSANet" / "README.md")):
        listed = {c["path"] for entry in quoted["configs"][group] for c in entry["configs"]}
        assert listed == {str(p.relative_to(REPO)) for p in (REPO / "configs" / folder).glob("*.py")}, group
        rendered = pages.block_text(f"paper_{'coco' if group == 'coco' else 'ablation'}_configs", page, REPO)
        for entry in quoted["configs"][group]:
            assert entry.get("rows") or entry.get("note"), entry
            line = next(line for line in rendered.splitlines()
                        if f"({os.path.relpath(REPO / entry['configs'][0]['path'], page.parent)})" in line)
            for row in entry.get("rows", []):
                ap = paper.paper_ap(quoted, row["table"], row["row"])
                assert 0 < ap < 1 and f"{100 * ap:.1f}" in line and row["row"] in line
        assert quoted["quoted_from"] in rendered


def test_every_paper_row_the_study_maps_to_exists():
    quoted = json.loads((REPO / paper.PAPER_TABLES).read_text())
    for entry in [quoted["baseline"], *quoted["variants"].values()]:
        assert "note" in entry or 0 < paper.paper_ap(quoted, entry["table"], entry["row"]) < 1, entry


# ---------------------------------------------------------------- the pages speak of the project alone
# Words that date a page: what changed, what was before, who measured when. Matched in prose only
# (fenced code, inline code, variant names such as `old_recipe` are names, not history).
HISTORY = [
    (r"\bnow\b", "now"),
    (r"\byet\b", "yet"),
    (r"\bused to\b", "used to"),
    (r"\bpreviously\b", "previously"),
    (r"\bno longer\b", "no longer"),
    (r"\banymore\b", "anymore"),
    (r"\bformerly\b", "formerly"),
    (r"\brecently\b", "recently"),
    (r"\b(was|were|has been|have been) (changed|moved|replaced|renamed|switched)\b", "a change"),
    (r"\bsessions?\b", "session"),
    (r"this project.s (\w+ )*machine", "this project's machine"),
    (r"\bhere:", "'here:' as a place"),
    (r"\.\./shared", "a path outside the repository"),
    (r"\bthe previous\b[^.\n]*\brun\b", "the previous ... run"),
    (r"\bmeasured again\b", "measured again"),
    (r"\bas the issue measured\b", "as the issue measured it"),
    (r"\bearlier\b", "earlier"),
    (r"\bin the latest run\b", "in the latest run"),
    (r"\bafter a restart\b", "after a restart"),
    (r"\bthe target was\b", "a goal named but not defined"),
    (r"\b(old|new) recipe\b", "old/new recipe"),
    (r"\bso far\b", "so far"),
]
NAMED_GOAL = re.compile(r"\bthe (\d+(?:\.\d+)?)x goal\b", re.I)


def history_findings(text: str) -> List[str]:
    """History words in a page's prose, and goals named as "the Nx goal" that the page never states
    ("at most Nx", "<= Nx")."""
    words = prose(text)
    found = [(match, label) for pattern, label in HISTORY for match in re.finditer(pattern, words, re.I)]
    found += [(match, "a goal named but not defined on the page") for match in NAMED_GOAL.finditer(words)
              if not re.search(rf"(at most|<=)\s*{re.escape(match.group(1))}x", text)]
    return [f"line {words.count(chr(10), 0, match.start()) + 1}: {label} ({match.group(0)!r})" for match, label in found]


def test_history_words_are_caught_in_prose_only():
    assert history_findings("as measured in the previous session's run")
    assert history_findings("the 3x goal is out of reach")
    assert history_findings("This used to be slower; it no longer is.")
    assert history_findings("It is `x` now.")
    assert history_findings("The new recipe beats the old recipe.") and history_findings("No GPU ran it so far.")
    assert not history_findings("The goal: at most 1.08x RetinaNet. The 1.08x goal is missed.")
    assert not history_findings("`old_recipe` against `new_recipe`:\n```bash\nmake now\n```\n")


@pytest.mark.parametrize("page", docs_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_pages_speak_of_the_project_alone(page):
    assert history_findings(page.read_text()) == []


# ---------------------------------------------------------------- documented commands
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
COMMAND_WORDS = {"python", "python3", "make", "pip", "git", ".venv/bin/python", ".venv/bin/pip", "pytest", "bash"}
REPO_PREFIXES = ("configs/", "tools/", "benchmarks/", "demo/", "projects/", "tests/", ".ci/")
ROOT_FILES = ("train_net.py", "Makefile", "setup.py", "setup.cfg", "pyproject.toml")
OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;"}
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]{2,}\b")  # NAME, PATH: a word the reader fills in


def shell_blocks(text: str) -> Iterator[str]:
    """The fenced blocks that hold shell commands: bash/sh/shell/console, or unlabelled ones that
    start with a command."""
    for match in FENCE.finditer(text):
        language, body = match.group(1).lower(), match.group(2)
        first = next((line.split()[0] for line in body.splitlines() if line.strip()), "")
        if language in SHELL_LANGUAGES or (language == "" and (first in COMMAND_WORDS or first.startswith("$"))):
            yield body


def commands(block: str) -> Iterator[List[str]]:
    """Each simple command of a block as words: continuation lines joined, comments, prompts,
    operators and leading VAR=value assignments removed."""
    joined = re.sub(r"\\\n", " ", block)
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            words = list(lexer)
        except ValueError:  # an open quote running over lines (a multi-line VAR="..." assignment)
            continue
        current: List[str] = []
        for word in words + [";"]:
            if word in OPERATORS:
                while current and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", current[0]):
                    current.pop(0)
                if current:
                    yield current
                current = []
            else:
                current.append(word)


def inline_commands(text: str) -> Iterator[List[str]]:
    """``make X`` and ``python path.py`` written as inline code in a page's prose (rendered captions
    quote recorded commands and are checked against their files instead)."""
    source = FENCE.sub("", RENDERED.sub("", text))
    for match in INLINE_CODE.finditer(source):
        code = match.group(0).strip("`")
        if re.match(r"^(make|python3?|\.venv/bin/python)(\s|$)", code) and not PLACEHOLDER.search(code):
            yield from commands(code)


def repository_paths(words: List[str]) -> List[str]:
    """Words that name a file or folder of this repository (not outputs, not your own data)."""
    found = []
    for word in words:
        value = word.split("=", 1)[1] if word.startswith("--") and "=" in word else word
        value = value.split("=", 1)[1] if re.match(r"^[\w.]+=", value) else value
        if value.startswith(REPO_PREFIXES) or value in ROOT_FILES:
            found.append(value.rstrip("/"))
    return found


def tool_of(words: List[str]) -> Optional[str]:
    """The repository script a command runs (``python X.py`` or ``python -m benchmarks.x``), if any."""
    if not words or not re.search(r"(^|/)python3?$", words[0]):
        return None
    if len(words) > 2 and words[1] == "-m":
        return words[2].replace(".", "/") + ".py" if words[2].startswith(("benchmarks.", "tools.")) else None
    if len(words) > 1 and words[1].endswith(".py"):
        return words[1]
    return None


@functools.lru_cache(maxsize=None)
def make_targets() -> Set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


# Runs every tool's --help in one interpreter, so torch and detectron2 are imported once.
HELP_RUNNER = """
import contextlib, io, json, runpy, sys
results = {}
for tool in sys.argv[1:]:
    out = io.StringIO()
    status = 0
    sys.argv = [tool, "--help"]
    try:
        with contextlib.redirect_stdout(out):
            if tool.startswith("benchmarks/"):
                runpy.run_module(tool[:-3].replace("/", "."), run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(tool, run_name="__main__")
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except BaseException as error:
        status = repr(error)
    results[tool] = [status, out.getvalue()]
print("HELP-RESULTS" + json.dumps(results))
"""


def help_outputs(tools: List[str]) -> Dict[str, Tuple[object, str]]:
    """``tool --help`` of each tool (a path; benchmarks run as modules): exit status and stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "projects" / "DSANet"), str(REPO)]),
               OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", HELP_RUNNER, *tools], cwd=REPO, capture_output=True, text=True,
                            env=env, timeout=600)
    marker = result.stdout.rfind("HELP-RESULTS")
    assert marker >= 0, f"the --help runner failed: {result.stderr[-2000:]}"
    return {tool: tuple(value) for tool, value in json.loads(result.stdout[marker + len("HELP-RESULTS"):]).items()}


def documented_commands() -> List[Tuple[str, List[str]]]:
    return [(str(page.relative_to(REPO)), words) for page in tracked_markdown()
            for block in shell_blocks(page.read_text()) for words in commands(block)]


@functools.lru_cache(maxsize=None)
def all_help_flags() -> Dict[str, Tuple[int, Set[str]]]:
    tools = sorted({tool for _, words in documented_commands() for tool in [tool_of(words)]
                    if tool and (REPO / tool).is_file()})
    return {tool: (status, set(re.findall(r"(--[A-Za-z0-9][\w-]*)", text)))
            for tool, (status, text) in help_outputs(tools).items()}


def target_and_script_problems(page: str, words: List[str]) -> List[str]:
    """A command's make targets that the Makefile lacks and repository files that do not exist."""
    shown = " ".join(words)[:120]
    problems = [f"{page}: `{shown}` names {path}, which does not exist"
                for path in repository_paths(words) if not (REPO / path).exists()]
    tool = tool_of(words)
    if tool and not (REPO / tool).is_file():
        problems.append(f"{page}: `{shown}` runs {tool}, which does not exist")
    if words[0] == "make":
        problems += [f"{page}: `{shown}`: the Makefile has no target '{target}'" for target in words[1:]
                     if "=" not in target and not target.startswith("-") and target not in make_targets()]
    return problems


def command_problems(page: str, words: List[str], helps: Dict[str, Tuple[int, Set[str]]]) -> List[str]:
    problems = target_and_script_problems(page, words)
    tool = tool_of(words)
    if tool and tool in helps:
        status, flags = helps[tool]
        if status != 0:
            problems.append(f"{page}: `{' '.join(words)[:120]}`: {tool} --help exits {status}")
        for word in words[2:]:
            flag = word.split("=", 1)[0]
            if re.match(r"^--[A-Za-z]", flag) and flag not in flags:
                problems.append(f"{page}: `{' '.join(words)[:120]}`: {tool} has no flag {flag}")
    return problems


def test_shell_blocks_are_parsed():
    block = ("OMP_NUM_THREADS=1 .venv/bin/python tools/compare_variants.py --config-file configs/x.py \\\n"
             "    --variant 'a: b=1' # comment\nmake setup && (make study & make study; wait)\n")
    parsed = list(commands(block))
    assert parsed[0][:2] == [".venv/bin/python", "tools/compare_variants.py"] and "--variant" in parsed[0]
    assert "a: b=1" in parsed[0] and "#" not in " ".join(parsed[0])
    assert [words[:2] for words in parsed[1:]] == [["make", "setup"], ["make", "study"], ["make", "study"], ["wait"]]
    assert tool_of(["python", "-m", "benchmarks.speed", "--quick"]) == "benchmarks/speed.py"
    assert repository_paths(["--config-file=configs/a.py", "output/x", "train_net.py"]) == ["configs/a.py", "train_net.py"]
    assert list(inline_commands("Run `make demo`, then `python tools/x.py --a` (`python -m benchmarks.NAME`).")) == [
        ["make", "demo"], ["python", "tools/x.py", "--a"]]


def test_command_check_catches_a_wrong_flag_file_and_target():
    helps = {"train_net.py": (0, {"--config-file", "--num-gpus"})}
    assert command_problems("P", ["python", "train_net.py", "--num-gpu", "8"], helps)
    assert not command_problems("P", ["python", "train_net.py", "--num-gpus", "8"], helps)
    assert command_problems("P", ["python", "train_net.py", "--config-file", "configs/no_such.py"], helps)
    assert command_problems("P", ["python", "tools/no_such_tool.py"], helps)
    assert command_problems("P", ["make", "benchmark"], helps)
    assert not command_problems("P", ["make", "test", "D2_SRC=x.tar.gz"], helps)


def test_commands_in_the_prose_name_real_targets_and_scripts():
    found = [(str(page.relative_to(REPO)), words) for page in tracked_markdown()
             for words in inline_commands(page.read_text())]
    assert any(words[:2] == ["make", "demo"] for _, words in found)
    assert [problem for page, words in found for problem in target_and_script_problems(page, words)] == []


def test_documented_commands_name_real_files_targets_and_flags():
    found = documented_commands()
    assert len(found) > 30 and any(tool_of(words) == "train_net.py" for _, words in found)
    helps = all_help_flags()
    assert "train_net.py" in helps and "--num-gpus" in helps["train_net.py"][1]
    problems = [problem for page, words in found for problem in command_problems(page, words, helps)]
    assert problems == []


# ---------------------------------------------------------------- links and anchors
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"[`*_~]|<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> Set[str]:
    text = FENCE.sub("", page.read_text())
    seen: Dict[str, int] = {}
    result = set()
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        result.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return result


def link_problems(page: Path, root: Path = REPO) -> List[str]:
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text()))
    problems = []
    for match in LINK.finditer(text):
        target = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        name = page.relative_to(root)
        if not resolved.exists():
            problems.append(f"{name}: link {target} points to a missing file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{name}: link {target}: {resolved.name} has no heading #{anchor}")
    return problems


def test_slugs_follow_github():
    assert github_slug("Does DSA help on my data? Comparing variants") == "does-dsa-help-on-my-data-comparing-variants"
    assert github_slug("The study under `bf16`") == "the-study-under-bf16"
    assert github_slug("CPUs and bf16: A/B") == "cpus-and-bf16-ab"
    assert github_slug("DSANet*-Conf against DSANet-Conf") == "dsanet-conf-against-dsanet-conf"


def test_link_check_catches_a_missing_file_and_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Title here\n[ok](#title-here) [bad](#title) [gone](b.md) [img](c.png)\n")
    (tmp_path / "c.png").write_bytes(b"")
    problems = link_problems(tmp_path / "a.md", tmp_path)
    assert len(problems) == 2 and "#title" in problems[0] and "b.md" in problems[1]


def test_links_and_anchors_resolve():
    problems = [problem for page in tracked_markdown() for problem in link_problems(page)]
    assert problems == []

"""The docs stay true: rendered tables match their JSON, pages speak of the project alone, and every
documented command names files, make targets and flags that exist; links and anchors resolve."""
import functools
import importlib.util
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

REPO = Path(__file__).resolve().parents[1]


def _load_renderer():
    spec = importlib.util.spec_from_file_location("render_docs", REPO / "tools" / "render_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_docs = _load_renderer()


@functools.lru_cache(maxsize=None)
def tracked_markdown() -> Tuple[Path, ...]:
    """Every tracked markdown file (every markdown file outside .git/.venv/output without git)."""
    try:
        names = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return tuple(render_docs.pages(REPO))
    return tuple(REPO / name for name in names)


# ---------------------------------------------------------------- rendered tables
def test_every_rendered_table_agrees_with_its_json():
    assert render_docs.process(REPO, check=True) == []


def test_pages_render_tables():
    rendered = {match.group(2) for page in tracked_markdown() for match in render_docs.BLOCK.finditer(page.read_text())}
    assert rendered == set(render_docs.TABLES), "every known table is shown on some page, and no unknown one"


@pytest.fixture
def docs_copy(tmp_path):
    """The pages and the kept results, copied with their layout into a scratch root."""
    for page in tracked_markdown():
        target = tmp_path / page.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, target)
    shutil.copytree(REPO / "benchmarks" / "results", tmp_path / "benchmarks" / "results", dirs_exist_ok=True)
    shutil.copy(REPO / render_docs.PAPER_TABLES, tmp_path / render_docs.PAPER_TABLES)
    return tmp_path


def _check(root: Path) -> str:
    """The --check report for ``root``: one line per disagreeing table (empty when all agree)."""
    return "\n".join(render_docs.process(root, check=True))


def test_check_fails_naming_the_table_when_a_page_number_is_edited(docs_copy):
    assert _check(docs_copy) == ""
    page = docs_copy / "benchmarks" / "README.md"
    text = page.read_text()
    edited = text.replace("| P3 | 100x167 | blockwise | fwd+bwd | 240.96 |", "| P3 | 100x167 | blockwise | fwd+bwd | 240.97 |")
    assert edited != text
    page.write_text(edited)
    report = _check(docs_copy)
    assert "benchmarks/README.md: table 'attention'" in report
    assert "table 'speed_fp32'" not in report


def test_check_fails_naming_the_table_when_a_json_number_is_edited(docs_copy):
    path = docs_copy / "benchmarks" / "results" / "study_fcos" / "results.json"
    data = json.loads(path.read_text())
    data["differences"][0]["AP"]["mean"] += 0.01
    path.write_text(json.dumps(data, indent=2))
    report = _check(docs_copy)
    assert "table 'study_fcos'" in report
    assert "table 'study_benchmark'" not in report


def test_render_restores_an_edited_page(docs_copy):
    page = docs_copy / "projects" / "DSANet" / "docs" / "STUDIES.md"
    page.write_text(page.read_text().replace("+1.46, +1.50, +1.50", "+1.46, +1.50, +1.99"))
    env = dict(os.environ, PYTHONPATH=str(REPO / "projects" / "DSANet"))
    tool = [sys.executable, str(REPO / "tools" / "render_docs.py"), "--root", str(docs_copy)]
    result = subprocess.run(tool + ["--check"], capture_output=True, text=True, env=env)
    assert result.returncode == 1 and "STUDIES.md: table 'study_benchmark_3seeds'" in result.stdout
    subprocess.run(tool, check=True, capture_output=True, env=env)
    assert _check(docs_copy) == ""
    assert "+1.46, +1.50, +1.50" in page.read_text()


# ---------------------------------------------------------------- the docs speak of the project alone
HISTORY = [
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
]
NAMED_GOAL = re.compile(r"\bthe (\d+(?:\.\d+)?)x goal\b", re.I)


def history_findings(text: str) -> List[str]:
    """History words, and goals named as "the Nx goal" that the page never states ("at most Nx", "<= Nx")."""
    found = [(match, label) for pattern, label in HISTORY for match in re.finditer(pattern, text, re.I)]
    found += [(match, "a goal named but not defined on the page") for match in NAMED_GOAL.finditer(text)
              if not re.search(rf"(at most|<=)\s*{re.escape(match.group(1))}x", text)]
    return [f"line {text.count(chr(10), 0, match.start()) + 1}: {label} ({match.group(0)!r})" for match, label in found]


def test_history_words_are_caught():
    assert history_findings("as measured in the previous session's run")
    assert history_findings("the 3x goal is out of reach")
    assert history_findings("# here:\nmake it")
    assert not history_findings("The goal: at most 1.08x RetinaNet. Here is the table. The 1.08x goal is missed.")


def test_docs_speak_of_the_project_alone():
    findings = {str(page.relative_to(REPO)): history_findings(page.read_text()) for page in tracked_markdown()}
    assert {page: found for page, found in findings.items() if found} == {}


# ---------------------------------------------------------------- documented commands
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
COMMAND_WORDS = {"python", "python3", "make", "pip", "git", ".venv/bin/python", ".venv/bin/pip", "pytest", "bash"}
REPO_PREFIXES = ("configs/", "tools/", "benchmarks/", "demo/", "projects/", "tests/", ".ci/")
ROOT_FILES = ("train_net.py", "Makefile", "setup.py", "setup.cfg", "pyproject.toml")
OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;"}


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


def command_problems(page: str, words: List[str], helps: Dict[str, Tuple[int, Set[str]]]) -> List[str]:
    problems = []
    shown = " ".join(words)[:120]
    for path in repository_paths(words):
        if not (REPO / path).exists():
            problems.append(f"{page}: `{shown}` names {path}, which does not exist")
    if words[0] == "make":
        for target in words[1:]:
            if "=" not in target and not target.startswith("-") and target not in make_targets():
                problems.append(f"{page}: `{shown}`: the Makefile has no target '{target}'")
    tool = tool_of(words)
    if tool and tool in helps:
        status, flags = helps[tool]
        if status != 0:
            problems.append(f"{page}: `{shown}`: {tool} --help exits {status}")
        for word in words[2:]:
            flag = word.split("=", 1)[0]
            if re.match(r"^--[A-Za-z]", flag) and flag not in flags:
                problems.append(f"{page}: `{shown}`: {tool} has no flag {flag}")
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


def test_command_check_catches_a_wrong_flag_file_and_target():
    helps = {"train_net.py": (0, {"--config-file", "--num-gpus"})}
    assert command_problems("P", ["python", "train_net.py", "--num-gpu", "8"], helps)
    assert not command_problems("P", ["python", "train_net.py", "--num-gpus", "8"], helps)
    assert command_problems("P", ["python", "train_net.py", "--config-file", "configs/no_such.py"], helps)
    assert command_problems("P", ["make", "benchmark"], helps)
    assert not command_problems("P", ["make", "test", "D2_SRC=x.tar.gz"], helps)


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


def link_problems(page: Path) -> List[str]:
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))
    problems = []
    for match in LINK.finditer(text):
        target = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        name = page.relative_to(REPO)
        if not resolved.exists():
            problems.append(f"{name}: link {target} points to a missing file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{name}: link {target}: {resolved.name} has no heading #{anchor}")
    return problems


def test_slugs_follow_github():
    assert github_slug("Does DSA help on my data? Comparing variants") == "does-dsa-help-on-my-data-comparing-variants"
    assert github_slug("The study under `bf16`") == "the-study-under-bf16"
    assert github_slug("CPUs and bf16: A/B") == "cpus-and-bf16-ab"


def test_link_check_catches_a_missing_file_and_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "a.md").write_text("# Title here\n[ok](#title-here) [bad](#title) [gone](b.md) [img](c.png)\n")
    (tmp_path / "c.png").write_bytes(b"")
    problems = link_problems(tmp_path / "a.md")
    assert len(problems) == 2 and "#title" in problems[0] and "b.md" in problems[1]


def test_links_and_anchors_resolve():
    problems = [problem for page in tracked_markdown() for problem in link_problems(page)]
    assert problems == []


def test_captions_state_command_machine_and_date():
    from dsanet.provenance import cpu_summary, provenance

    record = {"provenance": provenance("python benchmarks/speed.py --output out")}
    line = render_docs.caption([("benchmarks/results/x.json", record)], REPO / "benchmarks" / "README.md", REPO)
    machine = record["provenance"]["machine"]
    assert "`python benchmarks/speed.py --output out`" in line and record["provenance"]["date"] in line
    assert cpu_summary(machine["cpu"]) in line and render_docs._threads(machine["torch_threads"]) in line
    assert "](results/x.json)" in line
    assert "machine not recorded" in render_docs.caption([("a.json", {})], REPO / "README.md", REPO)


def test_a_study_caption_names_the_setup_its_runs_trained_on():
    """The invocation that writes a study's report may use other threads than its runs (--threads 1)."""
    from dsanet.provenance import provenance

    invocation = provenance("python tools/compare_variants.py")
    one_thread = {"machine": {**invocation["machine"], "torch_threads": 1}}
    study = {"provenance": {**invocation, "machine": {**invocation["machine"], "torch_threads": 2}},
             "runs": [{"variant": "a", "seed": s, "setup": one_thread} for s in (0, 1)]}
    line = render_docs.caption([("r.json", study)], REPO / "README.md", REPO)
    assert "machine of every run: " in line and "1 torch thread;" in line and "2 torch threads" not in line
    study["runs"][1]["setup"] = {"machine": {**invocation["machine"], "torch_threads": 2}}
    assert "runs on 2 setups" in render_docs.caption([("r.json", study)], REPO / "README.md", REPO)


def _paper_study(differences: Dict[str, Tuple[float, float, float]]) -> dict:
    """A study results dict with DSANet first and ``{variant: (mean, total_low, total_high)}`` over 2 seeds."""
    paper = json.loads((REPO / render_docs.PAPER_TABLES).read_text())
    names = ["dsanet", *paper["variants"]]
    diffs = [{"variant": name, "against": "dsanet",
              "AP": {"mean": m, "ci_low": low, "ci_high": high, "n": 2, "per_seed": {"0": m, "1": m}},
              "decomposition": {"training_half": 0.1, "validation_half": 0.2, "total_half": (high - low) / 2,
                                "total_low": low, "total_high": high, "needed": {"1.0": {"seeds": 2}}}}
             for name, (m, low, high) in differences.items()]
    return {"variants": [{"name": n} for n in names], "differences": diffs,
            "runs": [{"variant": n, "seed": s, "metrics": {"AP": 1.0}, "seconds": 600.0} for n in names for s in (0, 1)]}


def test_the_paper_table_says_sign_agreement_the_p3_answer_and_the_defaults_rule():
    """Rows against the paper's signs, the full-resolution P3 sentence, and the defaults rule: a default
    moves only for an interval entirely above 0, and never while a variant lacks two seeds."""
    paper = json.loads((REPO / render_docs.PAPER_TABLES).read_text())
    study = _paper_study({name: (-0.5, -0.9, -0.1) for name in paper["variants"]})
    shared = next(d for d in study["differences"] if d["variant"] == "shared_branch")
    shared["AP"].update(mean=0.8, ci_low=0.3, ci_high=1.3)
    shared["decomposition"].update(total_low=0.2, total_high=1.4)
    text = render_docs.render_study_paper(study)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["shared_branch"].count("| no |") == 1  # paper -0.1, here above 0
    assert rows["after_towers"].count("| yes |") == 1  # both below 0
    assert "| no paper number |" in rows["authors_code_scale_init"]
    assert "Does attending P3 at full resolution help here? No, it hurts" in text
    # The rule weighs a change against a config's default: DSANet-Conf in the Demo configs, not trained here.
    assert "no default changes yet. The interval lies entirely above 0 for shared_branch, but against DSANet " \
           "without confidence" in text
    assert "The COCO configs keep the paper's choice" in text
    assert "none changes" in render_docs.render_study_paper(_paper_study(
        {name: (0.5, -0.1, 1.1) for name in paper["variants"]}))

    # A pair between two variants (--compare) gets its own sentence, its name's case kept.
    study["differences"].append({"variant": "dsanet_star_p3_half_k1", "against": "p3_half_k1", "AP": {
        "mean": 5.0, "ci_low": 2.0, "ci_high": 8.0, "n": 3, "per_seed": {}}})
    assert "- On the embedded benchmark, dsanet_star_p3_half_k1 is better than p3_half_k1 (+5.00 AP, 95% " \
           "interval [2.00, 8.00], 3 seeds); the paper's COCO difference is -2.7 AP (Table 5, DSANet*(3-7), " \
           "kernel 1*1 minus Table 5, DSANet(3-7), kernel 1*1)." in render_docs.render_study_paper(study)
    study["differences"].pop()

    study["differences"].pop()  # the last variant has no pair yet: the rule waits for it
    assert "applied once every variant has two seeds" in render_docs.render_study_paper(study)


def test_every_coco_and_ablation_config_is_listed_beside_the_papers_row():
    """The README's COCO table and the model page's ablation table are rendered from the paper's numbers
    as quoted in benchmarks/paper_coco.json: every config there exists, every one of the folders is
    listed, and every quoted row is one of the paper's tables."""
    paper = json.loads((REPO / render_docs.PAPER_TABLES).read_text())
    for group, folder in (("coco", "COCO-Detection"), ("ablations", "Ablations")):
        listed = {c["path"] for entry in paper["configs"][group] for c in entry["configs"]}
        assert listed == {str(p.relative_to(REPO)) for p in (REPO / "configs" / folder).glob("*.py")}, group
        for entry in paper["configs"][group]:
            assert entry.get("rows") or entry.get("note"), entry
            for quoted in entry.get("rows", []):
                assert 0 < render_docs.paper_ap(paper, quoted["table"], quoted["row"]) < 1
    rendered = render_docs.block_text("paper_coco_configs", REPO / "README.md", REPO)
    assert "| [dsanet_conf_R_50_FPN_1x](configs/COCO-Detection/dsanet_conf_R_50_FPN_1x.py) | " \
           "Table 6, DSANet-Conf(50_x) | 36.3 |" in rendered
    assert "quoted from Wu, Chen, Ma, Zhang, Li" in rendered
    nested = render_docs.block_text("paper_ablation_configs", REPO / "projects" / "DSANet" / "README.md", REPO)
    assert "](../../configs/Ablations/dsanet_gamma1_R_50_FPN_1x.py) | Table 4, DSANet(gamma=1) | 35.5 |" in nested


def test_make_demo_trains_what_the_defaults_rule_picked():
    """`make demo` trains DSANet*-Conf only while the kept rule study puts it entirely above DSANet-Conf;
    the verdict reads the total interval, and waits for two seeds."""
    study = json.loads((REPO / "benchmarks/results/study_default/results.json").read_text())
    diff = next(d for d in study["differences"] if d["against"] == study["variants"][0]["name"])
    fires = render_docs._total_interval(diff)[0] > 0
    demo = re.search(r"^demo:.*\n\t\S+ train_net.py --config-file (\S+)", (REPO / "Makefile").read_text(), re.M)
    assert (demo.group(1) == render_docs.DEMO_STAR_CONFIG) == fires
    assert ("so `make demo` trains" in render_docs.render_study_default(study)) == fires
    held = json.loads(json.dumps(study))
    held_diff = next(d for d in held["differences"] if d["against"] == "dsanet_conf")
    held_diff["decomposition"]["total_low"] = -0.1
    assert "the Demo default stays dsanet_conf" in render_docs.render_study_default(held)
    held_diff["AP"]["n"] = 1
    assert "applied once both models have two seeds" in render_docs.render_study_default(held)

"""README.md is the entry point: every path it names must exist and every notebook must be in it.

The GPU sections (install, one GPU, eight GPUs, several nodes, data generation) are commands a
reader pastes on an expensive machine, so each command in their code blocks is checked: make
targets exist, ``python -m`` modules exist and accept the flags given, scripts and configs exist,
and the printed batch plan is what the project prints today.
"""

import contextlib
import importlib.util
import io
import re
import shlex

import pytest

from psyche_utils import doctor, scaling
from psyche_utils.paths import NOTEBOOKS_DIR, REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
_PATH_LIKE = re.compile(r"^(?:notebooks|psyche_utils|data|configs|tests|benchmarks|scripts|\.ci)/[\w./\-]*$|^[\w\-]+\.(?:yml|yaml|toml|txt|md)$")


def _named_paths() -> set[str]:
    code_spans = re.findall(r"`([^`\s]+)`", README)
    links = re.findall(r"\]\(([^)#\s]+)\)", README)
    flags = re.findall(r"--config(?:_file)? ([^\s`|]+)", README)
    return {p for p in code_spans + links + flags if _PATH_LIKE.match(p) and "<" not in p}


def test_every_named_path_exists():
    missing = sorted(p for p in _named_paths() if not (REPO_ROOT / p).exists())
    assert not missing, f"README.md names paths that do not exist: {missing}"


def test_readme_names_some_paths():
    assert len(_named_paths()) >= 15


def test_every_notebook_is_in_the_stage_table():
    missing = [nb.name for nb in sorted(NOTEBOOKS_DIR.glob("[0-9]*.ipynb")) if f"notebooks/{nb.name}" not in README]
    assert not missing, f"notebooks missing from README.md: {missing}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in README
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.M)


GPU_SECTIONS = ("Running on GPUs",)
_MAKEFILE = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def _commands(text: str) -> list[list[str]]:
    """Every command line in the bash blocks of ``text``, split into words, with leading VAR=value words removed."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words and re.match(r"^[A-Z_]+=", words[0]):
                words.pop(0)
            if words:
                commands.append(words)
    return commands


def _gpu_commands() -> list[list[str]]:
    return [words for title in GPU_SECTIONS for words in _commands(_section(title))]


def _check_train_command(words: list[str]) -> list[str]:
    """`... -m psyche_utils.train STAGE --config FILE` and any `--config_file FILE` before it."""
    problems = []
    if "--config_file" in words:
        config = words[words.index("--config_file") + 1]
        if not (REPO_ROOT / config).is_file():
            problems.append(f"missing accelerate config {config}")
    module = words[words.index("-m") + 1]
    if importlib.util.find_spec(module) is None:
        problems.append(f"no module {module}")
    if module == "psyche_utils.train":
        stage = words[words.index("-m") + 2]
        recipe = words[words.index("--config") + 1]
        if stage not in {"sft", "grpo"} or not (REPO_ROOT / recipe).is_file() or f"configs/{stage}/" not in recipe:
            problems.append(f"bad stage/recipe {stage} {recipe}")
    return problems


def _check(words: list[str]) -> list[str]:
    program = words[0]
    if program == "export":
        return [] if all(re.match(r"^[A-Z_]+=\S+$", word) for word in words[1:]) else [f"bad export {words}"]
    if program == "make":
        return [f"no make target {t}" for t in words[1:] if not re.search(rf"^{re.escape(t)}:", _MAKEFILE, re.M)]
    if program == "sbatch":
        script = next(w for w in words[1:] if not w.startswith("--"))
        stage = words[words.index(script) + 1]
        text = (REPO_ROOT / script).read_text(encoding="utf-8") if (REPO_ROOT / script).is_file() else ""
        return [] if text and stage in {"sft", "grpo"} else [f"bad sbatch line {words}"]
    if program.startswith("scripts/"):
        path = REPO_ROOT / program
        return [] if path.is_file() and path.stat().st_mode & 0o111 else [f"{program} missing or not executable"]
    if program == "accelerate":
        return _check_train_command(words)
    if program == "python" and words[1] == "-m":
        module, args = words[2], words[3:]
        parsers = {"psyche_utils.doctor": doctor.build_parser, "psyche_utils.scaling": scaling.build_parser}
        if module not in parsers:
            return _check_train_command(words)
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                parsers[module]().parse_args(args)
        except SystemExit:
            return [f"{module} refuses {args}"]
        return []
    return [f"command not covered by the README check: {' '.join(words)}"]


def test_gpu_sections_name_only_commands_that_exist():
    commands = _gpu_commands()
    assert len(commands) >= 12
    problems = [problem for words in commands for problem in _check(words)]
    assert not problems, problems


def test_gpu_sections_cover_install_one_gpu_eight_gpus_and_several_nodes():
    text = _section("Running on GPUs")
    for heading in ("### Install (GPU)", "### One GPU (qlora)", "### Eight GPUs (full)", "### Several nodes"):
        assert heading in text
    programs = {" ".join(words[:2]) for words in _gpu_commands()}
    assert {"make env-gpu", "sbatch --nodes=2"} <= programs


def test_readme_launch_commands_are_the_projects_own():
    from psyche_utils.train.common import launch_command_for

    for profile in ("qlora", "full"):
        for stage in ("sft", "grpo"):
            assert launch_command_for(stage, profile) in README, f"README lacks the {profile} {stage} command"


def test_printed_batch_plan_is_what_the_project_prints():
    block = re.search(r"python -m psyche_utils.scaling --nodes 2\n```\n\n```text\n(.*?)```", README, re.S)
    assert block, "the scaling output block is missing after its command"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert scaling.main(["--nodes", "2"]) == 0
    assert block.group(1) == printed.getvalue()


def test_slurm_script_launches_one_task_per_node_with_its_rank():
    script = (REPO_ROOT / "scripts/slurm/train_multinode.sbatch").read_text(encoding="utf-8")
    for needle in ("--ntasks-per-node=1", "--num_machines $NUM_NODES", "--machine_rank \\$SLURM_NODEID",
                   "--main_process_ip $MASTER_ADDR", "--config_file configs/accelerate/zero3_8gpu.yaml",
                   "-m psyche_utils.train $STAGE", "python -m psyche_utils.scaling"):
        assert needle in script, needle


@pytest.mark.parametrize("words", [["make", "no-such-target"], ["python", "-m", "psyche_utils.doctor", "--profile", "huge"]])
def test_the_command_check_can_fail(words):
    assert _check(words)

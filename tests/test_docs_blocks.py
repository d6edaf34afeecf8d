"""Every fenced code block of the README and of docs/ runs as written, under the convention of docs/README.md: a
block not marked `<!-- illustrative: REASON -->` runs (python blocks as `python -c`, bash blocks as `bash -e`) on a
CPU, offline, with the blocks of one page in order in one fresh, empty folder. The README's first block (`make demo`,
`make test`) is the set-up itself and is not run. Python blocks and the `brainlm` commands of bash blocks run in
forks of a fork server that has imported torch and transformers once (`tests/forked.py`: no new interpreter importing
them for each); the block parser and both runners are checked on known blocks."""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from .forked import run_bash, run_python

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ILLUSTRATIVE = re.compile(r"<!--\s*illustrative:\s*(.+?)\s*-->")
OPENING, CLOSING = re.compile(r"^(\s*)```(\w*)\s*$"), re.compile(r"^\s*```\s*$")
RUNNERS = {"python": run_python, "bash": run_bash}  # as `python -c` and `bash -e -o pipefail -c` (tests/forked.py)
BLOCK_TIMEOUT = 600  # seconds; the runnable blocks use small inputs


class Block(NamedTuple):
    """A fenced block: where it opens (1-based line), its language, its body (dedented), and why it is not run
    (the illustrative marker's reason; None for a block that runs)."""

    line: int
    language: str
    body: str
    illustrative: str | None


def fenced_blocks(text: str) -> list[Block]:
    """The fenced blocks of a markdown text, each with the illustrative marker on the line before it (blank lines
    aside), if any."""
    lines, blocks, index = text.splitlines(), [], 0
    while index < len(lines):
        opening = OPENING.match(lines[index])
        if not opening:
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if CLOSING.match(lines[j])), None)
        if end is None:
            raise ValueError(f"the block opened on line {index + 1} is never closed")
        before = next((line.strip() for line in reversed(lines[:index]) if line.strip()), "")
        marker = ILLUSTRATIVE.fullmatch(before)
        indent = len(opening.group(1))
        body = "\n".join(line[indent:] for line in lines[index + 1 : end])
        blocks.append(Block(index + 1, opening.group(2), body, marker.group(1) if marker else None))
        index = end + 1
    return blocks


def runnable(page: Path) -> list[Block]:
    """The blocks of `page` that run (the README's set-up block aside)."""
    blocks = fenced_blocks(page.read_text())
    if page.name == "README.md" and page.parent == ROOT:
        blocks = blocks[1:]
    return [block for block in blocks if block.illustrative is None]


def test_the_parser_finds_blocks_markers_and_indented_fences():
    text = (
        "intro\n```bash\necho one\n```\n\n<!-- illustrative: needs GPUs -->\n\n```python\nprint(2)\n```\n"
        "* a list item:\n\n  ```python\n  if True:\n      print(3)\n  ```\n<!-- a plain comment -->\n```text\nx\n```\n"
    )
    assert fenced_blocks(text) == [
        Block(2, "bash", "echo one", None),
        Block(8, "python", "print(2)", "needs GPUs"),
        Block(13, "python", "if True:\n    print(3)", None),
        Block(18, "text", "x", None),
    ]
    with pytest.raises(ValueError, match="line 1 is never closed"):
        fenced_blocks("```bash\necho")


@pytest.mark.slow  # the fork server (tests/forked.py)
def test_a_python_block_runs_as_python_c_would(tmp_path):
    """In its own folder, environment, `__main__` and `sys.argv`; its exit status and streams come back; a file it
    leaves open is flushed at its exit; what it does stays out of this process."""
    body = (
        "import os, sys, warnings\nprint(sys.argv, __name__, os.getcwd(), os.environ['ONLY_HERE'])\n"
        "print('to stderr', file=sys.stderr)\nwarnings.warn('shown', DeprecationWarning)\n"
        "left_open = open('written.txt', 'w')\nleft_open.write('flushed at exit')\nos.environ['LEAK'] = '1'\n"
    )
    result = run_python(body, tmp_path, {**os.environ, "ONLY_HERE": "yes"}, timeout=60)
    assert result == (0, f"['-c'] __main__ {tmp_path} yes\n", result.stderr)
    assert result.stderr.startswith("to stderr\n") and "DeprecationWarning: shown" in result.stderr
    assert (tmp_path / "written.txt").read_text() == "flushed at exit"
    assert "LEAK" not in os.environ and "ONLY_HERE" not in os.environ and Path.cwd() != tmp_path
    assert run_python("raise SystemExit(3)", tmp_path, dict(os.environ), 60).returncode == 3
    failed = run_python("import math\nmath.sqrt(-1)", tmp_path, dict(os.environ), 60)
    assert failed.returncode == 1 and failed.stderr.rstrip().endswith("ValueError: math domain error")
    with pytest.raises(TimeoutError, match="the script ran longer than 1 s"):
        run_python("import time\ntime.sleep(30)", tmp_path, dict(os.environ), 1)


@pytest.mark.slow  # the fork server (tests/forked.py)
def test_a_bash_block_runs_brainlm_commands_with_their_own_streams_and_status(tmp_path):
    """`brainlm` in a bash block is the CLI's `main` with the command line's arguments, folder and streams; its exit
    status is the command's, so `bash -e` stops at a failing one."""
    body = (
        "brainlm prepare -h | head -n 1 > usage.txt\nstatus=0\n"
        'brainlm convert "$PWD/missing" out 2> error.txt || status=$?\necho "convert exited $status"\n'
        "brainlm embed\necho never reached\n"
    )
    result = run_bash(body, tmp_path, dict(os.environ), timeout=120)
    assert (tmp_path / "usage.txt").read_text().startswith("usage: brainlm prepare")
    error = (tmp_path / "error.txt").read_text()
    assert error.startswith("brainlm convert: error: ") and str(tmp_path / "missing") in error
    assert result.stdout == "convert exited 2\n" and result.returncode == 2
    assert result.stderr.startswith("brainlm embed: error: the following arguments are required: MODEL, INPUTS")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_block_is_a_known_language_or_marked_illustrative_with_a_reason(page):
    for block in fenced_blocks(page.read_text()):
        where = f"{page.relative_to(ROOT)}:{block.line}"
        assert block.illustrative is None or block.illustrative.strip(), f"{where}: give the reason"
        assert block.illustrative is not None or block.language in RUNNERS, f"{where}: {block.language!r} cannot run"


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)], ids=lambda page: page.relative_to(ROOT).as_posix())
def test_the_blocks_of_a_page_run_as_written(page, tmp_path):
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # python
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
        "CUDA_VISIBLE_DEVICES": "",  # on a CPU, as the blocks promise
        "MPLBACKEND": "Agg",
    }
    for block in runnable(page):
        result = RUNNERS[block.language](block.body, tmp_path, environment, BLOCK_TIMEOUT)
        where = f"{page.relative_to(ROOT)}:{block.line} ({block.language})"
        assert result.returncode == 0, (
            f"{where} exited {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-4000:]}"
        )


def quick_start() -> Block:
    """The README's quick start: the first block under `## Quick start`."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Quick start")
    return fenced_blocks(text[start:])[0]


@pytest.mark.slow
def test_the_sdist_builds_a_wheel_that_installs_and_runs_the_quick_start(tmp_path):
    """
    The sdist is built from the tracked files, the wheel from the unpacked sdist (so the sdist holds all the wheel
    needs), and the wheel is installed into a fresh virtual environment where the quick start and `brainlm -h` run.
    No network: the build calls setuptools' PEP 517 hooks in this environment (no isolated build environment to
    download), and the wheel is installed with `--no-deps --no-index`; the fresh environment reads the dependencies
    (torch, transformers, ...) from this environment's site-packages through a path file, as
    `--system-site-packages` would from a base interpreter. Its own site-packages come first, so `brainlm_hf` is
    the wheel's, never this checkout's.
    """
    import shutil
    import sysconfig
    import tarfile

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    source = tmp_path / "source"
    for name in tracked:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"

    def hook(call: str, folder: Path) -> str:
        script = f"from setuptools import build_meta; print(build_meta.{call}({str(dist)!r}))"
        result = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.strip().splitlines()[-1]

    sdist = hook("build_sdist", source)
    assert re.fullmatch(r"brainlm_hf-[\w.]+\.tar\.gz", sdist), sdist
    with tarfile.open(dist / sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    wheel = hook("build_wheel", next((tmp_path / "unpacked").iterdir()))
    assert re.fullmatch(r"brainlm_hf-[\w.]+-py3-none-any\.whl", wheel), wheel

    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True)
    python = env / "bin" / "python"
    own = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    Path(own, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", dist / wheel]
    result = subprocess.run(install, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    clean.update(HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    work = tmp_path / "work"
    work.mkdir()
    code = "import brainlm_hf; print(brainlm_hf.__file__)\n" + quick_start().body
    result = subprocess.run([python, "-c", code], cwd=work, env=clean, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[0].startswith(own), result.stdout  # the installed wheel's package
    assert (work / "my-brainlm" / "config.json").is_file()
    result = subprocess.run([env / "bin" / "brainlm", "prepare", "-h"], env=clean, capture_output=True, text=True)
    assert result.returncode == 0 and "usage: brainlm prepare" in result.stdout, result.stderr[-2000:]

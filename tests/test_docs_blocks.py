"""Every fenced code block of the README and of docs/ runs as written, under the convention of docs/README.md: a
block not marked `<!-- illustrative: REASON -->` runs (python blocks with `python`, bash blocks with `bash -e`) on a
CPU, offline, with the blocks of one page in order in one fresh, empty folder. The README's first block (`make demo`,
`make test`) is the set-up itself and is not run. The block parser is checked on a page of known blocks."""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ILLUSTRATIVE = re.compile(r"<!--\s*illustrative:\s*(.+?)\s*-->")
OPENING, CLOSING = re.compile(r"^(\s*)```(\w*)\s*$"), re.compile(r"^\s*```\s*$")
RUNNERS = {"python": ["python", "-c"], "bash": ["bash", "-e", "-o", "pipefail", "-c"]}
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
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # python, brainlm
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
        "CUDA_VISIBLE_DEVICES": "",  # on a CPU, as the blocks promise
        "MPLBACKEND": "Agg",
    }
    for block in runnable(page):
        result = subprocess.run(
            [*RUNNERS[block.language], block.body], cwd=tmp_path, env=environment, capture_output=True, text=True,
            timeout=BLOCK_TIMEOUT,
        )  # fmt: skip
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

"""The executed edition: timing, output scanning, HTML rendering, the offline page check, the pipeline figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from psyche_utils import book
from psyche_utils.paths import REPO_ROOT

PNG_1x1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


def _write(path: Path, cells: list) -> Path:
    nbformat.write(new_notebook(cells=cells), path)
    return path


def _code(source: str, outputs: list) -> nbformat.NotebookNode:
    cell = new_code_cell(source, execution_count=1)
    cell.outputs = outputs
    return cell


def test_scan_finds_stderr_widgets_and_undisplayed_figures(tmp_path):
    path = _write(tmp_path / "07_demo.ipynb", [
        new_markdown_cell("# Demo"),
        _code("print('fine')", [new_output("stream", name="stdout", text="fine\n")]),
        _code("load()", [new_output("stream", name="stderr", text=(
            "/x/.venv/lib/python3.11/site-packages/trl/trainer/grpo_trainer.py:12: UserWarning: old\n"))]),
        _code("bar()", [new_output("display_data", data={
            book.WIDGET_MIME: {"model_id": "abc"}, "text/plain": "Loading weights:   0%|          | 0/27"})]),
        _code("plt.plot([1, 2])\nplt.show()", [new_output("display_data", data={
            "text/plain": "<Figure size 640x480 with 1 Axes>"})]),
        new_code_cell("plt.show()"),
        _code("plt.show()", [new_output("display_data", data={
            "image/png": PNG_1x1, "text/plain": "<Figure size 640x480 with 1 Axes>"})]),
    ])  # cell 5 never ran (a failure stopped the notebook): nothing to report
    findings = book.scan(path)
    assert [(f.cell, f.kind, f.library) for f in findings] == [
        (2, "stderr", "trl"),
        (3, "widget (static pages show its text)", "tqdm"),
        (4, "figure without an image", "matplotlib"),
        (4, "figure not displayed", "matplotlib"),
    ]
    assert findings[1].text == "Loading weights:   0%|          | 0/27"
    assert findings[0].line().startswith("07_demo.ipynb cell 2: stderr from trl: /x/")


@pytest.mark.parametrize(("text", "library"), [
    ("/v/lib/python3.11/site-packages/deepspeed/runtime/zero.py:5: Warning", "deepspeed"),
    ("Failed to load CPU gemm_4bit_forward from kernels-community", "bitsandbytes"),
    ("The tokenizer of transformers says hello", "transformers"),
    ("something odd happened", "unknown"),
])
def test_guess_library(text, library):
    assert book.guess_library(text) == library


def test_render_writes_pages_and_an_index(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    _write(executed / "01_a.ipynb", [new_markdown_cell("# 01 · First <stage>"),
                                      _code("show()", [new_output("display_data", data={"image/png": PNG_1x1})])])
    _write(executed / "02_b.ipynb", [new_markdown_cell("no title here")])
    (executed / "timings.json").write_text(json.dumps({"01_a": {"seconds": 12.4, "ok": True, "profile": "tiny"},
                                                        "02_b": {"seconds": 3.0, "ok": False, "profile": "tiny"}}))
    index = book.render(sorted(executed.glob("*.ipynb")), tmp_path / "site")
    text = index.read_text(encoding="utf-8")
    assert '<a href="01_a.html">01 · First &lt;stage&gt;</a>' in text and "(12 s, 1 figure)" in text
    assert '<a href="02_b.html">02_b</a>' in text and "(FAILED after 3 s, 0 figures)" in text
    assert "on the tiny profile" in text
    assert "data:image/png;base64," in (tmp_path / "site" / "01_a.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_execute_times_each_notebook_draws_inline_and_stops_at_a_failure(tmp_path, monkeypatch, request):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # what the old Makefile set; execute must override it
    good = _write(tmp_path / "01_plot.ipynb", [new_code_cell(
        "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()")])
    bad = _write(tmp_path / "02_bad.ipynb", [new_code_cell("raise ValueError('broken on purpose')")])
    never = _write(tmp_path / "03_never.ipynb", [new_code_cell("1")])
    with pytest.raises(RuntimeError, match=r"02_bad.ipynb failed \(ValueError: broken on purpose\)"):
        book.execute([good, bad, never], tmp_path / "out", timeout=120)
    timings = json.loads((tmp_path / "out" / "timings.json").read_text())
    assert list(timings) == ["01_plot", "02_bad"]
    assert timings["01_plot"]["ok"] and not timings["02_bad"]["ok"] and timings["01_plot"]["seconds"] > 0
    executed = tmp_path / "out" / "01_plot.ipynb"
    assert book.image_count(executed) == 1 and book.scan(executed) == []
    assert not (tmp_path / "out" / "03_never.ipynb").exists()
    assert os.environ["MPLBACKEND"] == "Agg", "execute must leave the caller's environment as it was"

    site = tmp_path / "site"
    book.render([executed], site)
    request.getfixturevalue("browser")
    sizes = book.browser_image_sizes(site / "01_plot.html")
    assert len(sizes) == 1 and sizes[0][0] > 100 and sizes[0][1] > 100


def test_browser_reports_a_broken_image(tmp_path, browser):
    page = tmp_path / "page.html"
    page.write_text(f'<html><body><img src="data:image/png;base64,{PNG_1x1}">'
                    '<img src="missing.png"><img src="https://example.org/x.png"></body></html>')
    assert book.browser_image_sizes(page) == [(1, 1), (0, 0), (0, 0)]


def test_cli_fails_without_executed_notebooks(tmp_path, capsys):
    assert book.main(["scan", "--executed-dir", str(tmp_path)]) == 1
    assert "run `make tutorial` first" in capsys.readouterr().err


def test_pipeline_figure_is_up_to_date(tmp_path):
    import matplotlib.image

    fresh = tmp_path / "pipeline.png"
    subprocess.run([sys.executable, str(REPO_ROOT / "docs" / "draw_pipeline.py"), "--output", str(fresh)],
                   check=True, capture_output=True, env={**os.environ, "MPLBACKEND": "Agg"})
    committed = matplotlib.image.imread(REPO_ROOT / "docs" / "pipeline.png")
    drawn = matplotlib.image.imread(fresh)
    stale = "docs/pipeline.png is stale: run python docs/draw_pipeline.py"
    assert committed.shape == drawn.shape, stale
    assert float(np.abs(committed - drawn).mean()) < 1e-3, stale


def test_pipeline_figure_names_files_its_notebooks_write():
    """Every data file the figure lists is named in the code of the notebook it credits.

    Models are saved where the training recipe says, so they, and that every listed file really
    appears after a run, are checked on the executed notebooks.
    """
    for _, _, notebooks, files in book.pipeline_stages():
        cells = [cell for name in notebooks.split(",") for cell in json.loads(
            (REPO_ROOT / "notebooks" / f"{name.strip()}.ipynb").read_text(encoding="utf-8"))["cells"]]
        code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        for name in files:
            if not name.startswith("models/"):
                assert f'"{Path(name).name}"' in code, f"{notebooks} does not write outputs/{name}"

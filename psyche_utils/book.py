"""Execute the numbered notebooks once, time them, check their outputs and publish them as HTML.

``make tutorial`` and ``make test`` call ``execute`` so that each notebook runs exactly once per
build, in order, with its wall time recorded in ``outputs/executed/timings.json``. ``scan`` reads
the executed copies and lists what a reader should not see: warnings on stderr, progress widgets
that a static page shows as ``0%| 0/1``, and figures that were drawn but never displayed.
``render`` turns the executed copies into a static site (nbconvert's HTML exporter, lab template,
images embedded) with an index page: the browsable executed edition that ``make book`` builds.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from psyche_utils.paths import NOTEBOOKS_DIR, REPO_ROOT, outputs_dir

INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml")
FIGURE_REPR = re.compile(r"^<Figure size \d+(\.\d+)?x\d+(\.\d+)? with \d+ Axes>$")
LIBRARY_IN_PATH = re.compile(r"site-packages/([A-Za-z_][A-Za-z0-9_]*)/")
# Messages that name no library but come from one.
MESSAGE_SOURCES = {"gemm_4bit": "bitsandbytes", "kernels-community": "bitsandbytes", "ZeRO": "deepspeed"}
KNOWN_LIBRARIES = ("bitsandbytes", "deepspeed", "trl", "transformers", "accelerate", "peft", "torch", "datasets",
                   "matplotlib", "jieba", "tqdm")


def numbered_notebooks(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The tutorial's notebooks in the order they must run (each reads what the one before wrote)."""
    return sorted(notebooks_dir.glob("[0-9]*.ipynb"))


def pipeline_stages() -> list[tuple[str, str, str, list[str]]]:
    """The stages drawn in docs/pipeline.png: (stage, what happens, notebooks, files under outputs/).

    Read from the drawing script itself, so the figure, notebook 00's checks and the tests share one list.
    """
    script = REPO_ROOT / "docs" / "draw_pipeline.py"
    spec = importlib.util.spec_from_file_location("draw_pipeline", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STAGES


def executed_dir() -> Path:
    return outputs_dir() / "executed"


def book_dir() -> Path:
    return outputs_dir() / "book"


def execute(notebooks: list[Path], output_dir: Path, timeout: int = 1800) -> dict[str, dict]:
    """Run each notebook top to bottom in a fresh kernel, in order, and record its wall time.

    The timings file is rewritten after every notebook, so a failure still leaves the times of the
    notebooks that ran. The first failing notebook stops the run: the later ones read its outputs.
    Kernels inherit this process's environment, so the inline backend is set for them here: a
    non-inline one (Agg) would draw every figure into nothing.
    """
    previous = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    try:
        return _execute(notebooks, output_dir, timeout)
    finally:
        if previous is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = previous


def _execute(notebooks: list[Path], output_dir: Path, timeout: int) -> dict[str, dict]:
    from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor

    output_dir.mkdir(parents=True, exist_ok=True)
    timings_path = output_dir / "timings.json"
    timings: dict[str, dict] = {}
    for notebook in notebooks:
        nb = nbformat.read(notebook, as_version=4)
        runner = ExecutePreprocessor(timeout=timeout)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        error: str | None = None
        try:
            runner.preprocess(nb, {"metadata": {"path": str(notebook.parent)}})
        except CellExecutionError as exc:
            error = f"{exc.ename}: {exc.evalue}"
        seconds = time.perf_counter() - started
        nbformat.write(nb, output_dir / notebook.name)
        timings[notebook.stem] = {
            "seconds": round(seconds, 1),
            "ok": error is None,
            "profile": os.environ.get("PSYCHE_PROFILE", ""),
            "load_average_before": round(load_before, 2),
            "cpu_count": os.cpu_count(),
        }
        timings_path.write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")
        print(f"[{'ok' if error is None else 'FAIL'}] {notebook.name}: {seconds:.1f}s", flush=True)
        if error is not None:
            raise RuntimeError(f"{notebook.name} failed ({error}); executed copy with the traceback: "
                               f"{output_dir / notebook.name}")
    total = sum(entry["seconds"] for entry in timings.values())
    print(f"{len(timings)} notebooks in {total:.1f}s; times in {timings_path}")
    return timings


@dataclass(frozen=True)
class Finding:
    """One thing in an executed notebook that a reader should not see."""

    notebook: str
    cell: int
    kind: str
    library: str
    text: str

    def line(self) -> str:
        return f"{self.notebook} cell {self.cell}: {self.kind} from {self.library}: {self.text}"


def guess_library(text: str) -> str:
    """Which library a warning came from: the site-packages path in it, else a library it names."""
    match = LIBRARY_IN_PATH.search(text)
    if match:
        return match.group(1)
    for fragment, library in MESSAGE_SOURCES.items():
        if fragment in text:
            return library
    lowered = text.lower()
    for library in KNOWN_LIBRARIES:
        if re.search(rf"\b{library}\b", lowered):
            return library
    return "unknown"


def _first_line(text: str, width: int = 160) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:width]
    return ""


def scan(path: Path) -> list[Finding]:
    """What an executed notebook shows that it should not: stderr, progress widgets, undisplayed figures."""
    nb = nbformat.read(path, as_version=4)
    findings = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.name == "stderr" and output.text.strip():
                findings.append(Finding(path.name, index, "stderr", guess_library(output.text),
                                        _first_line(output.text)))
            elif output.output_type in ("display_data", "execute_result"):
                data = output.get("data", {})
                if WIDGET_MIME in data:
                    findings.append(Finding(path.name, index, "widget (static pages show its text)",
                                            "tqdm", _first_line(data.get("text/plain", ""))))
                elif FIGURE_REPR.match(data.get("text/plain", "").strip()) and not any(m in data for m in IMAGE_MIMES):
                    findings.append(Finding(path.name, index, "figure without an image", "matplotlib",
                                            data["text/plain"].strip()))
        # A cell after a failure never ran: it has no outputs to judge.
        if _draws_figure(cell.source) and cell.get("execution_count") is not None and not _has_image(cell):
            findings.append(Finding(path.name, index, "figure not displayed", "matplotlib",
                                    "the cell calls plt.show() but has no image output (non-inline backend?)"))
    return findings


def _draws_figure(source: str) -> bool:
    return bool(re.search(r"\bplt\.show\(\)", source))


def _has_image(cell) -> bool:
    return any(any(m in output.get("data", {}) for m in IMAGE_MIMES) for output in cell.get("outputs", []))


def image_count(path: Path) -> int:
    """How many images (figures, pictures) an executed notebook displays."""
    nb = nbformat.read(path, as_version=4)
    return sum(1 for cell in nb.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
               if any(m in output.get("data", {}) for m in IMAGE_MIMES))


def notebook_title(path: Path) -> str:
    """The first level-1 heading of a notebook, or its file name."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if match:
                return match.group(1).strip()
    return path.stem


def render(executed: list[Path], output_dir: Path) -> Path:
    """Write one static HTML page per executed notebook plus an index; returns the index page."""
    from nbconvert import HTMLExporter

    output_dir.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    timings_path = executed[0].parent / "timings.json" if executed else None
    timings = json.loads(timings_path.read_text(encoding="utf-8")) if timings_path and timings_path.exists() else {}
    rows = []
    for path in executed:
        body, _ = exporter.from_filename(str(path))
        page = output_dir / f"{path.stem}.html"
        page.write_text(body, encoding="utf-8")
        entry = timings.get(path.stem, {})
        took = "not timed" if "seconds" not in entry else f"{entry['seconds']:.0f} s"
        if entry.get("ok") is False:
            took = f"FAILED after {took}"
        figures = image_count(path)
        rows.append(f'<li><a href="{page.name}">{html.escape(notebook_title(path))}</a> '
                    f'<span class="meta">({took}, {figures} figure{"" if figures == 1 else "s"})</span></li>')
    profile = next(iter(timings.values()), {}).get("profile", "") if timings else ""
    index = output_dir / "index.html"
    index.write_text(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>Psyche-R1 tutorial: executed edition</title>"
        "<style>body{font-family:sans-serif;max-width:48em;margin:2em auto;line-height:1.5}"
        ".meta{color:#666}</style></head><body>\n"
        "<h1>Psyche-R1 tutorial: executed edition</h1>\n"
        f"<p>Every numbered notebook, run top to bottom{f' on the {html.escape(profile)} profile' if profile else ''}, "
        "with its outputs and figures. Times are wall-clock seconds on the machine that built this page.</p>\n"
        "<ol>\n" + "\n".join(rows) + "\n</ol>\n</body></html>\n",
        encoding="utf-8",
    )
    return index


_REPORT_SCRIPT = """<script>window.addEventListener("load", function () {
  var sizes = Array.prototype.map.call(document.images, function (i) { return [i.naturalWidth, i.naturalHeight]; });
  var report = document.createElement("pre"); report.id = "image-report";
  report.textContent = JSON.stringify(sizes); document.body.appendChild(report);
});</script>"""


def chromium() -> str | None:
    """The headless browser the page checks use (Debian's ``chromium`` package), if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def browser_image_sizes(page: Path, timeout: int = 120) -> list[tuple[int, int]]:
    """Open a page in headless Chromium, offline, and return each <img>'s natural size once it has loaded.

    A broken image has size (0, 0). The network is cut off (every host resolves to nothing), so a
    page that only works online fails here instead of on a reader's train.
    """
    browser = chromium()
    if browser is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="psyche-page-") as scratch:
        probe = Path(scratch) / page.name
        text = page.read_text(encoding="utf-8")
        probe.write_text(text.replace("</body>", _REPORT_SCRIPT + "</body>", 1) if "</body>" in text
                         else text + _REPORT_SCRIPT, encoding="utf-8")
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", f"--user-data-dir={scratch}/profile", "--host-resolver-rules=MAP * ~NOTFOUND",
                   "--virtual-time-budget=15000", "--dump-dom", probe.as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    match = re.search(r'<pre id="image-report">(.*?)</pre>', result.stdout, re.S)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"{page.name} did not finish loading in Chromium (exit {result.returncode}): "
                           f"{result.stderr.strip()[-500:]}")
    return [tuple(size) for size in json.loads(html.unescape(match.group(1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m psyche_utils.book")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("execute", help="run the numbered notebooks once, in order, and time them")
    run.add_argument("notebooks", nargs="*", type=Path)
    run.add_argument("--output-dir", type=Path, default=None)
    run.add_argument("--timeout", type=int, default=1800)
    publish = commands.add_parser("render", help="render the executed copies to static HTML with an index")
    publish.add_argument("--executed-dir", type=Path, default=None)
    publish.add_argument("--output-dir", type=Path, default=None)
    check = commands.add_parser("scan", help="fail on stderr, progress widgets or undisplayed figures")
    check.add_argument("--executed-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.command == "execute":
        notebooks = args.notebooks or numbered_notebooks()
        try:
            execute(notebooks, args.output_dir or executed_dir(), args.timeout)
        except RuntimeError as error:
            print(f"[FAIL] {error}", file=sys.stderr)
            return 1
        return 0
    source = args.executed_dir or executed_dir()
    executed = sorted(source.glob("[0-9]*.ipynb"))
    if not executed:
        print(f"[FAIL] no executed notebooks in {source}: run `make tutorial` first", file=sys.stderr)
        return 1
    if args.command == "render":
        index = render(executed, args.output_dir or book_dir())
        print(f"{len(executed)} pages; open {index}")
        return 0
    findings = [finding for path in executed for finding in scan(path)]
    for finding in findings:
        print(f"[FAIL] {finding.line()}")
    if not findings:
        print(f"[OK] {len(executed)} executed notebooks show no warnings, widgets or missing figures")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())

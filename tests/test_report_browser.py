"""report.html in a real headless browser (Debian's chromium, driven through Playwright): what a reader sees."""

import shutil
from pathlib import Path

import pytest

from conftest import run_mnist

pytestmark = pytest.mark.slow  # Chromium opening real reports

VIEWPORT = {"width": 1200, "height": 900}


def open_report(browser, run_dir: Path):
    page = browser.new_page(viewport=VIEWPORT)
    page.goto((run_dir / "report.html").as_uri())
    page.wait_for_load_state("load")
    return page


def top(page, selector: str) -> float:
    return page.locator(selector).first.bounding_box()["y"]


def test_a_completed_report_leads_with_numbers_and_figures(browser, trained_runs, tmp_path):
    # The MLP run: it made a mistake on the test split to explain (the CNN made none).
    run_dir = shutil.copytree(trained_runs["mlp"], tmp_path / trained_runs["mlp"].name)
    scored = run_mnist("evaluate", run_dir, "--corruptions")  # the robustness section, as a user adds it
    assert scored.returncode == 0, scored.stderr
    assert run_mnist("report", run_dir).returncode == 0
    page = open_report(browser, run_dir)
    images = page.evaluate("() => Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert [alt for alt, _, _ in images] == ["Learning curves", "Confusion matrix", "Most confident mistakes",
                                             "Why it erred", "Reliability diagram", "Corruptions",
                                             "Training samples", "First-layer weights"], images
    assert all(done and width > 500 for _, done, width in images), images  # all decoded
    # The trust sections: calibration before and after its temperature, the corruptions' table.
    assert top(page, "img[alt='Most confident mistakes']") < top(page, "img[alt='Why it erred']")
    calibration = page.locator("h2", has_text="Calibration")
    assert calibration.is_visible()
    assert top(page, "h2:text('Per-class test metrics')") < top(page, "h2:text-is('Calibration')")
    assert page.locator("table", has=page.locator("td", has_text="ECE (15 bins)")).is_visible()
    corrupted = page.locator("table", has=page.locator("td", has_text="canny_edges"))
    assert corrupted.is_visible()
    assert corrupted.locator("tr").count() >= 13  # header, clean, >= 10 corruptions, mean
    # The first screen holds the headline numbers and the start of the learning curves.
    assert page.locator(".tile").count() >= 8
    assert top(page, ".tile") < 200
    assert page.locator(".tile .label").first.inner_text() == "test accuracy"
    assert top(page, "img[alt='Learning curves']") < VIEWPORT["height"]
    assert top(page, "img[alt='Confusion matrix']") < top(page, "img[alt='Most confident mistakes']")
    # Details are folded until asked for; the config reads as YAML.
    config = page.locator("details", has=page.locator("summary", has_text="Configuration"))
    assert not config.evaluate("d => d.open")
    assert not config.locator("table").is_visible()
    config.locator("summary").click()
    assert config.locator("table").is_visible()
    cells = config.locator("td").all_inner_texts()
    assert "false" in cells
    assert "null" in cells
    assert "False" not in cells
    assert "None" not in cells
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000  # a page of figures, not a blank one
    page.close()


def test_a_stopped_report_says_so_first_with_the_resume_command(browser, trained_runs, tmp_path):
    from click.testing import CliRunner

    from mnist_pipeline.cli import cli

    stopped = shutil.copytree(trained_runs["smoke"], tmp_path / "stopped")
    for name in ("metrics.json", "report_data.npz", "model.keras"):
        (stopped / name).unlink()
    (stopped / "status.json").write_text('{"status": "interrupted", "error": "Interrupted: SIGINT: stopped"}')
    assert CliRunner().invoke(cli, ["report", str(stopped)]).exit_code == 0
    page = open_report(browser, stopped)
    notice = page.locator("[role=alert]")
    assert notice.is_visible()
    assert top(page, "[role=alert]") < top(page, "h2")
    text = notice.inner_text()
    assert "This run was interrupted: SIGINT: stopped." in text
    assert f"mnist train --resume {stopped}" in text
    page.close()


@pytest.fixture(scope="module")
def prefixed_sweep(idx_dir, tmp_path_factory):
    """A tiny real sweep (4 trials of 1 epoch) over keys that share long prefixes: its sweep folder."""
    import json

    from conftest import ROOT, run_mnist

    out = tmp_path_factory.mktemp("sweep")
    (out / "space.yaml").write_text(json.dumps({"sampler": "random", "trials": 4, "params": {
        "data.augmentation.rotation": {"low": 0.0, "high": 0.05},
        "data.augmentation.translation": {"low": 0.0, "high": 0.15},
        "training.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}}))  # JSON is YAML
    done = run_mnist("sweep", "--config", ROOT / "configs/mlp.yaml", "--space", out / "space.yaml", "--name",
                     "prefixed", "--data-dir", idx_dir, "--output-dir", out, "--set", "data.subset=200", "--set",
                     "training.batch_size=32", "--set", "training.epochs=1", "--set", "training.jit_compile=false",
                     "--device", "cpu", "--no-prune")
    assert done.returncode == 0, done.stderr
    return out / "sweeps/prefixed"


def test_a_sweep_report_shows_its_figures_and_keeps_its_wide_table_in_its_own_box(browser, prefixed_sweep):
    runs = sorted(p.name for p in (prefixed_sweep / "runs").iterdir())
    for width in (VIEWPORT["width"], 640):  # a laptop's window, and a narrow one that the table cannot fit
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto((prefixed_sweep / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("() => Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
        assert [alt for alt, _, _ in images] == ["Optimization history", "Parameter importances",
                                                 "Parallel coordinates", "Slices"]
        assert all(done and natural > 500 for _, done, natural in images), images  # all decoded
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
        trials = page.locator("table", has=page.locator("th", has_text="run folder"))
        headers = trials.locator("th").all_inner_texts()
        assert headers[5:8] == ["rotation", "translation", "learning_rate"]  # short, and distinct
        assert sorted(cell for cell in trials.locator("td").all_inner_texts() if "-trial-" in cell) == runs
        # Every table fits its box or scrolls inside it: (table width, box width, box scroll width, overflow-x).
        boxes = page.evaluate("""() => Array.from(document.querySelectorAll('table')).map(t => [
            t.getBoundingClientRect().width, t.parentElement.clientWidth, t.parentElement.scrollWidth,
            getComputedStyle(t.parentElement).overflowX])""")
        for table, box, scrolled, overflow in boxes:
            assert table <= box + 1 or (overflow == "auto" and scrolled > box), (width, boxes)
        table, box, scrolled = page.evaluate("""() => { const t = Array.from(document.querySelectorAll('th'))
            .find(h => h.textContent === 'run folder').closest('table');
            return [t.getBoundingClientRect().width, t.parentElement.clientWidth, t.parentElement.scrollWidth]; }""")
        assert width > 1000 or scrolled > box < table  # the narrow window: the trials table scrolls in its box
        page.close()

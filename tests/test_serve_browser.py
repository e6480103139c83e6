"""`mnist serve`'s draw page in a real headless browser (Debian's chromium, driven through Playwright) against a
real server process: what a user drawing with a mouse, a pen or a finger, or uploading a photo, sees."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest
from serving import served

pytestmark = pytest.mark.slow  # a server process and Chromium

VIEWPORT = {"width": 1000, "height": 800}
# Strokes of clearly drawn digits, as (x, y) fractions of the canvas: each stroke is drawn pressed, point to point.
DIGITS = {
    1: [[(0.45, 0.18), (0.55, 0.12), (0.55, 0.88)]],
    7: [[(0.25, 0.18), (0.75, 0.18), (0.42, 0.88)]],
    0: [[(0.5 + 0.2 * np.sin(t), 0.5 - 0.33 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 25)]],
}
STEP_PX = 6  # mouse moves this far between two pointer events at most: a hand's speed, not a jump


@pytest.fixture(scope="module")
def server(trained_runs):
    """The small CNN run served by the default engine (its ONNX export): (base URL, an httpx client)."""
    with served(trained_runs["smoke"]) as (_, url), httpx.Client(base_url=url, timeout=60) as client:
        yield url, client


@pytest.fixture()
def page(browser, server):
    """The draw page, opened and showing its model card; `page.requests` lists every URL it asked for and
    `page.console_errors` what it logged as an error (a script or a policy violation)."""
    url, _ = server
    context = browser.new_context(viewport=VIEWPORT, has_touch=True)
    opened = context.new_page()
    opened.requests, opened.console_errors = [], []
    opened.on("request", lambda request: opened.requests.append(request.url))
    opened.on("console", lambda message: message.type == "error" and opened.console_errors.append(message.text))
    opened.on("pageerror", lambda error: opened.console_errors.append(str(error)))
    opened.main_response = opened.goto(url + "/")
    opened.wait_for_selector("#card dd")  # /v1/model answered
    yield opened
    context.close()


def canvas_point(page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#canvas").bounding_box()
    return box["x"] + x * box["width"], box["y"] + y * box["height"]


def path(page, stroke) -> list[tuple[float, float]]:
    """The stroke's points in page pixels, at most STEP_PX apart."""
    points = [canvas_point(page, x, y) for x, y in stroke]
    dense = [points[0]]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        steps = max(1, int(np.hypot(x1 - x0, y1 - y0) // STEP_PX))
        dense += [(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps) for i in range(1, steps + 1)]
    return dense


def draw(page, strokes, device: str = "mouse") -> None:
    """Draws the strokes with real input events: the mouse's, or through Chromium's DevTools protocol a pen's
    (mouse events with pointerType pen) or a finger's (touch events)."""
    cdp = None if device == "mouse" else page.context.new_cdp_session(page)
    for stroke in strokes:
        points = path(page, stroke)
        if device == "mouse":
            page.mouse.move(*points[0])
            page.mouse.down()
            for x, y in points[1:]:
                page.mouse.move(x, y)
            page.mouse.up()
        elif device == "pen":
            pen = {"pointerType": "pen", "button": "left", "clickCount": 1, "force": 0.5}
            cdp.send("Input.dispatchMouseEvent", {"type": "mousePressed", "x": points[0][0], "y": points[0][1], **pen})
            for x, y in points[1:]:
                cdp.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y, "buttons": 1, **pen})
            cdp.send("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": points[-1][0], "y": points[-1][1],
                                                  **pen})
        else:
            for kind, (x, y) in [("touchStart", points[0]), *(("touchMove", p) for p in points[1:])]:
                cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def settled(page) -> None:
    """Waits until the page has its answer to the whole drawing: data-state "done", no request under way, and
    no new one for a moment (the last stroke's request may start a little after its pointerup)."""
    while True:
        page.wait_for_function("() => document.getElementById('answer').dataset.state === 'done'", timeout=30_000)
        asked = len(page.requests)
        page.wait_for_timeout(300)
        if len(page.requests) == asked and page.locator("#answer").get_attribute("data-state") == "done":
            return


def clear(page) -> None:
    page.click("#clear")
    assert page.locator("#answer").get_attribute("data-state") == "idle"


def shown(page) -> dict:
    """What the page shows as its answer."""
    return page.evaluate("""() => ({
        prediction: document.getElementById('prediction').textContent.trim(),
        confidence: document.getElementById('confidence').textContent,
        error: document.getElementById('error').textContent,
        bars: Array.from(document.querySelectorAll('#bars li')).map(li => [
            li.querySelector('.name').textContent, parseFloat(li.querySelector('.value').textContent),
            li.classList.contains('best')]),
        seen: (i => [i.getAttribute('src') || '', i.complete, i.naturalWidth, i.naturalHeight])(
            document.getElementById('seen')),
    })""")


def api_answer(client, body: bytes, content_type: str | None = None, name: str | None = None) -> dict:
    """The API's answer to the same image: as the raw body, or as a multipart form's file."""
    if name:
        reply = client.post("/v1/predict?seen=true", files={"file": (name, body, content_type)})
    else:
        reply = client.post("/v1/predict?seen=true", content=body, headers={"Content-Type": content_type})
    assert reply.status_code == 200, reply.text
    (result,) = reply.json()["results"]
    return result


def canvas_png(page) -> bytes:
    url = page.evaluate("() => document.getElementById('canvas').toDataURL('image/png')")
    assert url.startswith("data:image/png;base64,")
    return base64.b64decode(url.split(",", 1)[1])


def assert_shows(answer: dict, result: dict) -> None:
    """The page shows the API's answer: its digit, 10 bars summing to 100 %, the digit's bar highest and
    marked, and the 28x28 image the model saw."""
    assert answer["error"] == ""
    assert answer["prediction"] == str(result["prediction"])
    assert answer["confidence"] == f"confidence {100 * result['confidence']:.1f} %"
    names = [name for name, _, _ in answer["bars"]]
    values = np.array([value for _, value, _ in answer["bars"]])
    assert names == [str(c) for c in range(10)]
    assert abs(values.sum() - 100) < 0.6  # ten values each rounded to 0.1
    assert np.abs(values - 100 * np.array(result["probabilities"])).max() <= 0.051
    assert int(values.argmax()) == result["prediction"] or values.max() == values[result["prediction"]]
    assert [best for _, _, best in answer["bars"]] == [c == result["prediction"] for c in range(10)]
    src, complete, width, height = answer["seen"]
    assert src == result["seen"] and src.startswith("data:image/png;base64,")
    assert complete and (width, height) == (28, 28)


def test_a_drawn_digit_gets_the_apis_answer_with_its_bars_and_the_models_view(page, server):
    _, client = server
    readings = {}
    for digit, strokes in DIGITS.items():
        clear(page)
        draw(page, strokes)
        settled(page)
        answer = shown(page)
        result = api_answer(client, canvas_png(page), "image/png")
        assert_shows(answer, result)
        readings[digit] = result["prediction"]
    # The small CNN, trained on printed digits only, reads these clearly drawn ones.
    assert readings == {digit: digit for digit in DIGITS}, readings
    assert page.console_errors == []


def test_an_uploaded_photo_gets_the_apis_answer(page, server, tmp_path):
    from photos import digit_photo

    from conftest import make_rendered_digits

    _, client = server
    digits, labels = make_rendered_digits(10, seed=11)
    photo = digit_photo(digits[4], np.random.default_rng(3), medium="pen", size=(600, 800), table=False)
    page.set_input_files("#upload", files=[{"name": "four.jpg", "mimeType": "image/jpeg", "buffer": photo}])
    settled(page)
    assert page.locator("#photo").is_visible()  # the photo itself, beside the answer
    assert page.evaluate("() => document.getElementById('photo').naturalWidth") == 600
    assert_shows(shown(page), api_answer(client, photo, "image/jpeg", name="four.jpg"))
    # The same file chosen again still gets an answer (the input is emptied after each upload).
    clear(page)
    page.set_input_files("#upload", files=[{"name": "four.jpg", "mimeType": "image/jpeg", "buffer": photo}])
    settled(page)
    assert shown(page)["prediction"] != ""


def test_clear_empties_the_canvas_and_the_answer(page):
    draw(page, DIGITS[7])
    settled(page)
    assert shown(page)["prediction"] != ""
    clear(page)
    answer = shown(page)
    assert answer["prediction"] == ""  # a non-breaking space
    assert answer["confidence"] == "Draw to see the answer."
    assert answer["error"] == ""
    assert [value for _, value, _ in answer["bars"]] == [0.0] * 10
    assert not any(best for _, _, best in answer["bars"])
    assert answer["seen"][0] == ""
    assert page.evaluate("""() => { const c = document.getElementById('canvas');
        return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.every(v => v === 255); }""")
    assert page.locator("#answer").get_attribute("data-state") == "idle"


def test_the_page_loads_nothing_from_elsewhere(page, server):
    url, _ = server
    policy = page.main_response.headers.get("content-security-policy", "")
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy, policy
    draw(page, DIGITS[1])
    settled(page)
    photo = canvas_png(page)
    page.set_input_files("#upload", files=[{"name": "drawn.png", "mimeType": "image/png", "buffer": photo}])
    settled(page)
    asked = [u for u in page.requests if not u.startswith(("data:", "blob:"))]
    assert asked and all(u.startswith(url + "/") for u in asked), page.requests
    assert {u.split("?")[0].removeprefix(url) for u in asked} == {"/", "/v1/model", "/v1/predict"}
    assert page.console_errors == []  # no script or resource refused by the policy


def test_the_model_card_names_the_run_its_dataset_and_test_accuracy(page, trained_runs):
    run = trained_runs["smoke"]
    card = dict(zip(page.locator("#card dt").all_inner_texts(), page.locator("#card dd").all_inner_texts(),
                    strict=True))
    accuracy = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    assert card["run"] == run.name
    assert card["dataset"] == "mnist"
    assert card["test accuracy"] == f"{100 * accuracy:.2f} %"
    assert card["engine"] == "onnxruntime"
    assert page.locator("#item-word").inner_text() == "digit"


@pytest.mark.parametrize("device", ["pen", "touch"])
def test_a_stroke_drawn_with_a_pen_or_a_finger_gets_an_answer(page, server, device):
    _, client = server
    page.evaluate("""() => { window.pointerTypes = []; document.getElementById('canvas')
        .addEventListener('pointerdown', (e) => window.pointerTypes.push(e.pointerType)); }""")
    draw(page, DIGITS[7], device)
    settled(page)
    assert page.evaluate("() => window.pointerTypes") == [device]
    assert_shows(shown(page), api_answer(client, canvas_png(page), "image/png"))
    assert page.evaluate("() => window.scrollY") == 0  # the finger drew; the page did not scroll


def slow_answers(page, delay_ms: int = 1500) -> None:
    """Every answer from the API arrives `delay_ms` late (a slow network or a busy server)."""
    page.evaluate(f"""() => {{ const fetchNow = window.fetch;
        window.fetch = (...args) => new Promise(wait => setTimeout(wait, {delay_ms}))
            .then(() => fetchNow(...args)); }}""")


def test_an_answer_that_arrives_after_clear_is_dropped(page):
    slow_answers(page)
    draw(page, DIGITS[7])
    clear(page)  # while the drawing's answer is on its way
    page.wait_for_timeout(4000)  # it has arrived by now, and been dropped
    answer = shown(page)
    assert answer["prediction"] == "" and answer["confidence"] == "Draw to see the answer."
    assert [value for _, value, _ in answer["bars"]] == [0.0] * 10
    assert page.locator("#answer").get_attribute("data-state") == "idle"


def test_the_answer_is_done_only_for_the_drawing_as_it_is_now(page, server):
    _, client = server
    slow_answers(page, 800)
    draw(page, DIGITS[1])
    assert page.locator("#answer").get_attribute("data-state") == "busy"  # at once, not after the first answer
    page.wait_for_selector('#answer[data-state="done"]', timeout=30_000)
    assert_shows(shown(page), api_answer(client, canvas_png(page), "image/png"))  # the whole stroke's answer

"""`mnist serve`: a real uvicorn server on a free localhost port, in its own process, called over HTTP."""

from __future__ import annotations

import json
import signal
import socket
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from catalogue.requests import CASES, png_of
from serving import served

from conftest import recorded, run_mnist
from mnist_pipeline.data.idx import read_idx

pytestmark = pytest.mark.slow  # each test talks to a server process
TOLERANCE = 1e-5  # onnxruntime and TensorFlow computing the same float32 graph (as tests/test_export.py)


@pytest.fixture(scope="module")
def server(trained_runs):
    """The small CNN run served by the default engine (its ONNX export, made on first start)."""
    with served(trained_runs["smoke"]) as (process, url), httpx.Client(base_url=url, timeout=60) as client:
        yield process, client


@pytest.fixture(scope="module")
def test_images(rendered_dir):
    return (read_idx(rendered_dir / "t10k-images-idx3-ubyte.gz", 3),
            read_idx(rendered_dir / "t10k-labels-idx1-ubyte.gz", 1))


def test_json_images_get_the_probabilities_the_run_recorded(server, trained_runs, test_images):
    _, client = server
    images, labels = test_images
    reply = client.post("/v1/predict", json={"images": images[:40].tolist()})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    got = np.array([r["probabilities"] for r in results])
    assert np.abs(got - recorded(trained_runs["smoke"])[:40]).max() < TOLERANCE
    assert [r["prediction"] for r in results] == list(got.argmax(axis=1))
    assert [r["name"] for r in results] == [str(r["prediction"]) for r in results]  # MNIST's names
    single = client.post("/v1/predict", json=images[3].tolist()).json()["results"]  # one bare 28x28 array
    assert len(single) == 1 and np.abs(np.array(single[0]["probabilities"]) - got[3]).max() < TOLERANCE


def test_a_photo_gets_the_answer_mnist_predict_gives(server, trained_runs, tmp_path):
    from conftest import render_digit

    _, client = server
    photo = render_digit(7, np.random.default_rng(5), canvas=240, size=150).astype(np.uint8)  # dark on white
    (tmp_path / "seven.png").write_bytes(png_of(photo))
    cli = run_mnist("predict", trained_runs["smoke"], tmp_path / "seven.png", "--json")
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout)[0]
    as_body = client.post("/v1/predict?seen=true", content=png_of(photo), headers={"Content-Type": "image/png"})
    as_form = client.post("/v1/predict?seen=true", files={"file": ("seven.png", png_of(photo), "image/png")})
    for reply, source in ((as_body, "body"), (as_form, "seven.png")):
        assert reply.status_code == 200, reply.text
        (result,) = reply.json()["results"]
        assert result["file"] == source
        for key in ("prediction", "name", "uncertain", "temperature"):  # predict --json's vocabulary
            assert result[key] == expected[key]
        assert np.abs(np.array(result["probabilities"]) - expected["probabilities"]).max() < TOLERANCE
        assert result["seen"].startswith("data:image/png;base64,")  # the 28x28 image the model saw


def test_an_npy_file_and_a_blank_image_in_one_form(server, test_images):
    _, client = server
    images, _ = test_images
    from catalogue.data_files import npy_bytes

    reply = client.post("/v1/predict", files=[("file", ("three.npy", npy_bytes(images[:3]))),
                                              ("other", ("blank.png", png_of(np.full((50, 50), 255, np.uint8))))])
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [r["file"] for r in results] == ["three.npy[0]", "three.npy[1]", "three.npy[2]", "blank.png"]
    assert all(r["prediction"] is not None for r in results[:3])
    blank = results[3]
    assert blank["prediction"] is None and blank["probabilities"] is None
    assert "blank" in blank["warning"]


def test_files_under_one_field_name_json_without_its_type_and_head_all_answer(server, test_images):
    _, client = server
    images, _ = test_images
    pngs = [png_of(image) for image in images[:3]]
    several = client.post("/v1/predict", files=[("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)])
    assert [r["file"] for r in several.json()["results"]] == ["0.png", "1.png", "2.png"]
    typed = client.post("/v1/predict", json=images[:2].tolist()).json()["results"]
    untyped = client.post("/v1/predict", content=json.dumps(images[:2].tolist()),  # what curl -d sends
                          headers={"Content-Type": "application/x-www-form-urlencoded"}).json()["results"]
    assert [r["probabilities"] for r in untyped] == [r["probabilities"] for r in typed]
    assert client.head("/healthz").status_code == 200 and client.head("/").status_code == 200
    versioned = client.post("/v1/models/mnist/versions/1:predict", json={"instances": images[:1].tolist()})
    assert np.abs(np.array(versioned.json()["predictions"][0]) - typed[0]["probabilities"]).max() < TOLERANCE


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_request_gets_its_status_and_one_message(case, server):
    process, client = server
    if case.files is not None:
        reply = client.request(case.method, case.path, files=case.files or {"note": (None, "no file here")},
                               headers=case.headers)
    else:
        reply = client.request(case.method, case.path, content=case.body, headers=case.headers)
    assert reply.status_code == case.status, reply.text[:500]
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert list(body) == ["detail"] and isinstance(body["detail"], str)
    assert "\n" not in body["detail"] and len(body["detail"]) < 600
    for fragment in case.says:
        assert fragment in body["detail"], body["detail"]
    assert "Traceback" not in body["detail"]
    assert client.get("/healthz").json() == {"status": "ok"}  # still serving
    assert process.poll() is None


def test_a_chunked_body_past_the_limit_is_refused_while_it_streams(server):
    _, client = server

    def chunks():
        for _ in range(30):
            yield bytes(1 << 20)  # 30 MiB in all, no Content-Length

    reply = client.post("/v1/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert reply.status_code == 413
    assert "larger than the 20 MiB" in reply.json()["detail"]


def test_a_content_length_that_is_not_a_number_is_refused(server):
    _, client = server
    host, port = client.base_url.host, client.base_url.port
    with socket.create_connection((host, port), timeout=30) as raw:
        raw.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
        answer = raw.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 400"), answer[:200]


def test_the_model_card_and_the_pages(server, trained_runs):
    _, client = server
    run_dir = trained_runs["smoke"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    card = client.get("/v1/model").json()
    assert card["run"] == run_dir.name and card["dataset"] == "mnist" and card["model"] == "cnn"
    assert card["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert card["temperature"] == pytest.approx(metrics["calibration"]["temperature"])
    assert card["engine"] == "onnxruntime" and card["file"].endswith("export/model.onnx")
    assert card["class_names"] == [str(i) for i in range(10)] and card["trained"]
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing loaded from elsewhere
    docs = client.get("/docs").text
    assert "/static-offline-docs/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_the_onnx_server_never_loads_tensorflow(server):
    process, _ = server
    maps = Path(f"/proc/{process.pid}/maps").read_text()
    assert "onnxruntime" in maps
    assert "tensorflow" not in maps


def test_concurrent_requests_all_get_their_own_answer(server, test_images):
    _, client = server
    images, _ = test_images
    expected = np.array([r["prediction"] for r in client.post(
        "/v1/predict", json=images[:16].tolist()).json()["results"]])
    answers: dict[int, int] = {}

    def ask(i: int) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            answers[i] = own.post("/v1/predict", content=png_of(images[i]),
                                  headers={"Content-Type": "image/png"}).json()["results"][0]["prediction"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [answers[i] for i in range(16)] == list(expected)


def test_sigterm_finishes_the_request_under_way_then_stops_cleanly(trained_runs, test_images):
    images, _ = test_images
    with served(trained_runs["smoke"], "--workers", "1") as (process, url):
        batch = np.repeat(images[:8], 128, axis=0)[:1024]  # a long request: 1,024 images
        replies = []
        thread = threading.Thread(target=lambda: replies.append(httpx.post(
            f"{url}/v1/predict", json=batch.tolist(), timeout=120)))
        thread.start()
        import time

        time.sleep(1.0)  # the request is being read or classified
        process.send_signal(signal.SIGTERM)
        thread.join()
        _, stderr = process.communicate(timeout=60)
    assert replies[0].status_code == 200 and len(replies[0].json()["results"]) == 1024
    assert process.returncode == 0
    assert stderr.strip().splitlines()[-1] == "server stopped (SIGTERM)"


def test_keras_engine_gives_the_onnx_engines_answers(server, trained_runs, test_images):
    _, client = server
    images, _ = test_images
    reply = client.post("/v1/predict", json=images[:8].tolist()).json()
    onnx = np.array([r["probabilities"] for r in reply["results"]])
    with served(trained_runs["smoke"], "--engine", "keras") as (_, url):
        reply = httpx.post(f"{url}/v1/predict", json=images[:8].tolist(), timeout=60).json()
        card = httpx.get(f"{url}/v1/model").json()
    assert card["engine"] == "keras" and card["file"].endswith("model.keras")
    assert np.abs(np.array([r["probabilities"] for r in reply["results"]]) - onnx).max() < TOLERANCE


def test_pages_elsewhere_may_call_the_api_only_when_allowed(server, trained_runs, test_images):
    _, client = server
    images, _ = test_images
    origin = "http://localhost:3000"
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    plain = client.post("/v1/predict", json=images[0].tolist(), headers={"Origin": origin})
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers  # by default: no CORS
    with served(trained_runs["smoke"], "--allow-origin", origin) as (_, url):
        allowed = httpx.options(f"{url}/v1/predict", headers=preflight)
        other = httpx.options(f"{url}/v1/predict", headers={**preflight, "Origin": "http://evil.example"})
        answered = httpx.post(f"{url}/v1/predict", json=images[0].tolist(), headers={"Origin": origin})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == origin
    assert "access-control-allow-origin" not in other.headers
    assert answered.headers["access-control-allow-origin"] == origin


def test_listening_beyond_this_machine_is_said(trained_runs):
    with served(trained_runs["smoke"], "--host", "0.0.0.0") as (process, url):
        assert httpx.get(f"{url}/healthz").status_code == 200
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert "warning: listening on 0.0.0.0" in stderr and "no authentication" in stderr


def test_refusals_before_serving_are_one_line(trained_runs, catalogue_runs, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_mnist("serve", trained_runs["smoke"], "--port", port, timeout=120)
    _, _, resumable = catalogue_runs
    cases = [
        (busy, 2, [f"--port {port}: already in use", "--port 0"]),
        (run_mnist("serve", resumable, "--port", "0", timeout=120), 1, ["the run is running"]),
        (run_mnist("serve", tmp_path / "nothing", "--port", "0", timeout=120), 2, ["no such run folder"]),
        (run_mnist("serve", trained_runs["smoke"], "--model", tmp_path / "x.onnx", "--port", "0", timeout=120), 2,
         ["x.onnx: no such file"]),
        (run_mnist("serve", trained_runs["smoke"], "--host", "no.such.host.invalid", timeout=120), 2,
         ["--host no.such.host.invalid"]),
        (run_mnist("serve", trained_runs["smoke"], "--allow-origin", "localhost:3000/app", timeout=120), 2,
         ["--allow-origin localhost:3000/app: not an origin"]),
        (run_mnist("serve", trained_runs["smoke"], "--model", trained_runs["smoke"] / "model.keras", "--port", "0",
                   timeout=120), 2, ["takes an ONNX file (.onnx)"]),
    ]
    for done, code, fragments in cases:
        assert done.returncode == code, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        for fragment in fragments:
            assert fragment in lines[0]


def test_an_export_of_another_run_is_refused(trained_runs, tmp_path):
    other = tmp_path / "other.onnx"
    done = run_mnist("export", trained_runs["mlp"], "--format", "onnx", "--output", other)
    assert done.returncode == 0, done.stderr
    refused = run_mnist("serve", trained_runs["smoke"], "--model", other, "--port", "0", timeout=120)
    assert refused.returncode == 2
    assert f"an export of run {trained_runs['mlp'].name}, not of {trained_runs['smoke'].name}" in refused.stderr


def test_an_onnx_file_that_is_not_an_export_is_refused(trained_runs, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    done = run_mnist("serve", trained_runs["smoke"], "--model", tmp_path / "junk.onnx", "--port", "0", timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "junk.onnx: cannot load it in onnxruntime" in done.stderr


def test_a_tensorflow_serving_client_works_unchanged(server, trained_runs, test_images):
    _, client = server
    images, _ = test_images
    reply = client.post("/v1/predict", json=images[:6].tolist()).json()
    ours = np.array([r["probabilities"] for r in reply["results"]])
    run_name = trained_runs["smoke"].name
    rows = client.post("/v1/models/mnist:predict", json={"instances": images[:6].tolist()})
    assert rows.status_code == 200, rows.text
    assert np.abs(np.array(rows.json()["predictions"]) - ours).max() < TOLERANCE
    named = client.post(f"/v1/models/{run_name}:predict",
                        json={"signature_name": "serving_default",
                              "instances": [{"pixels": image} for image in (images[:2] / 255).tolist()]})
    assert np.abs(np.array(named.json()["predictions"]) - ours[:2]).max() < 1e-4  # 0-1 pixels are scaled
    columns = client.post("/v1/models/mnist:predict", json={"inputs": {"pixels": images[:3].tolist()}})
    assert np.abs(np.array(columns.json()["outputs"]) - ours[:3]).max() < TOLERANCE
    assert client.get("/v1/models/mnist").json()["model_version_status"][0]["state"] == "AVAILABLE"
    signature = client.get("/v1/models/mnist/metadata").json()["metadata"]["signature_def"]["signature_def"]
    assert list(signature["serving_default"]["inputs"]) == ["pixels"]
    refusals = [
        (client.post("/v1/models/resnet:predict", json={"instances": images[:1].tolist()}), 404, "Latest(resnet)"),
        (client.get("/v1/models/resnet"), 404, "Servable not found"),
        (client.post("/v1/models/mnist:predict", json={"instances": [[1, 2, 3]]}), 400, "input shape (1, 3)"),
        (client.post("/v1/models/mnist:predict", json={"instances": [], "inputs": []}), 400, "one of them"),
        (client.post("/v1/models/mnist:predict", json={"foo": 1}), 400, "one of them"),
        (client.post("/v1/models/mnist:predict", json={"signature_name": "x", "instances": []}), 400, "\"x\""),
        (client.post("/v1/models/mnist:predict", content=b"{", headers={"Content-Type": "application/json"}), 400,
         "JSON Parse error"),
        (client.post("/v1/models/mnist:predict", content=json.dumps({"instances": [[[float("nan")] * 28] * 28]}),
                     headers={"Content-Type": "application/json"}), 400, "finite"),
        (client.post("/v1/models/mnist:predict", json={"instances": [[["a"] * 28] * 28]}), 400, "not an array"),
    ]
    for reply, status, fragment in refusals:
        assert reply.status_code == status and list(reply.json()) == ["error"], reply.text
        assert fragment in reply.json()["error"]


def test_without_onnxruntime_the_fix_is_named_before_any_export(trained_runs):
    import subprocess
    import sys

    script = ("import sys; sys.modules['onnxruntime'] = None; sys.argv = ['mnist', 'serve', sys.argv[1], '--port', "
              "'0']; from mnist_pipeline.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", script, str(trained_runs["smoke"])], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: serving an ONNX export needs onnxruntime, from the export extra: "
                                   "pip install -e '.[export]'; or pass --engine keras")

"""`rnnlab serve` over HTTP: every endpoint against the API, and every limit and refusal.

The app is driven in-process through httpx's ASGI transport (the same app uvicorn serves), one
event loop per call; the command itself is run once for real, as a subprocess on a free port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html.parser
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import rnnlab
from rnnlab.api import prediction_dict
from rnnlab.cli import main
from rnnlab.serve.app import STATIC, PredictRequest, create_app, run_names
from rnnlab.serve.config import LIMITS, PREDICT_LIMITS, ServeConfig
from rnnlab.serve.security import CSP, allowed_hosts, host_name
from tinyrun import TEXT, train_tiny

BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> rnnlab.TrainedRun:
    return train_tiny(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def lm(trained) -> rnnlab.LanguageModel:
    return trained.model


@pytest.fixture(scope="module")
def app(lm):
    return create_app({"tiny": lm}, ServeConfig(allow_hosts=("lab.example",)))


def call(app, method: str, url: str, raise_errors: bool = True, **kwargs) -> httpx.Response:
    """One request through the ASGI app, as a browser at BASE would send it."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_errors)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


def post(app, url: str, body: dict, **kwargs) -> httpx.Response:
    return call(app, "POST", url, json=body, **kwargs)


def assert_clean_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """A one-line JSON error with the status and words expected, and nothing it must not show."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    message = body["error"]
    assert "\n" not in message and message
    for fragment in fragments:
        assert fragment in message, message
    for leak in ("Traceback", 'File "', "/tmp", "/work", "site-packages", "pydantic.dev"):
        assert leak not in response.text, response.text
    assert response.headers["content-security-policy"] == CSP
    return message


# -- every endpoint gives the API's numbers -------------------------------------------------------


def test_runs_lists_the_runs_without_local_paths(app, trained):
    r = call(app, "GET", "/api/runs")
    assert r.status_code == 200
    body = r.json()
    [run] = body["runs"]
    assert run["name"] == "tiny" and run["layers"] == 2 and run["units"] == 24
    assert run["corpus"] == "quotes" and run["model"]["cell"] == "gru"
    assert body["limits"] == LIMITS and "quotes" in body["patterns"]
    assert str(trained.run_dir.parent) not in r.text


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"steps": 30},
        {"steps": 30, "strategy": "sample", "seed": 5, "temperature": 0.8, "top_k": 6},
        {"steps": 30, "strategy": "sample", "seed": 5, "top_p": 0.9},
        {"steps": 20, "strategy": "beam", "beam": 3},
    ],
)
def test_predict_answers_what_the_api_answers(app, lm, options):
    r = post(app, "/api/predict", {"run": "tiny", "prefix": "she said", "show": 7, **options})
    assert r.status_code == 200, r.text
    [pred] = lm.predict("she said", show=7, **options)
    assert r.json() == prediction_dict(pred)
    assert len(r.json()["next"]) == 7


def test_defaults_agree_across_the_cli_the_api_and_the_server(app, lm, trained, capsys):
    """No options: the same candidates (as many) and continuation from the three doors; only a
    number of characters: the same continuation again, `lm.generate` included, whichever of
    its two names (`num_preds`, `steps`) is used."""

    def cli(*flags: str) -> dict:
        capsys.readouterr()
        argv = ["predict", str(trained.run_dir), "--prefix", "she said", "--json", *flags]
        assert main(argv) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    def server(**options) -> dict:
        r = post(app, "/api/predict", {"run": "tiny", "prefix": "she said", **options})
        assert r.status_code == 200, r.text
        return r.json()

    api = prediction_dict(lm.predict("she said")[0])
    assert cli() == api == server()
    assert len(api["next"]) == rnnlab.GenerateConfig().show == 5 and api["continuation"] == ""
    [pred] = lm.predict("she said", num_preds=30)
    expected = prediction_dict(pred)
    assert len(expected["continuation"]) == 30
    assert cli("--num-preds", "30") == cli("--steps", "30") == expected
    assert server(num_preds=30) == server(steps=30) == expected
    assert prediction_dict(lm.predict("she said", steps=30)[0]) == expected
    assert lm.generate("she said", 30) == lm.generate("she said", steps=30) == pred.continuation
    assert lm.generate("she said", num_preds=30) == pred.continuation


def test_the_predict_schema_is_made_from_the_declaration(app):
    """PredictRequest holds GenerateConfig's fields, defaults and help, at the server's caps."""
    props = PredictRequest.model_json_schema()["properties"]
    served = call(app, "GET", "/api/openapi.json").json()["components"]["schemas"]
    assert set(served["PredictRequest"]["properties"]) == set(props)
    declared = {f.name: f for f in dataclasses.fields(rnnlab.GenerateConfig)}
    assert set(props) == {"run", "prefix", *declared}
    for name, f in declared.items():
        prop = props[name]
        assert prop.get("default") == f.default and prop["description"] == f.metadata["help"]
        bounds = {b: v for s in [prop, *prop.get("anyOf", [])] for b, v in s.items()}
        cap = PREDICT_LIMITS.get(name, {})
        for key, word in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum")):
            values = [v for v in (f.metadata.get(key), cap.get(key)) if v is not None]
            tighter = max if key != "le" else min
            assert bounds.get(word) == (tighter(values) if values else None), (name, key)
    assert props["num_preds"]["maximum"] == LIMITS["steps"] < 1_000_000  # the server's cap
    r = post(app, "/api/predict", {"run": "tiny", "prefix": "the", "num_preds": 3, "steps": 3})
    assert_clean_error(r, 422, "steps: Extra inputs are not permitted")


def test_score_answers_the_api_with_alternatives(app, lm):
    text = 'he said "the dog sat."'
    r = post(app, "/api/score", {"run": "tiny", "text": text, "top": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(c["char"], c["bits"]) for c in body["chars"]] == lm.score(text)
    assert [[(t["char"], t["prob"]) for t in c["top"]] for c in body["chars"]] == lm.alternatives(
        text, 4
    )
    assert body["mean_bits"] == pytest.approx(sum(b for _, b in lm.score(text)) / (len(text) - 1))


def test_evaluate_states_units_and_metrics_answer_the_api(app, lm):
    text = TEXT[:150]
    r = post(app, "/api/evaluate", {"run": "tiny", "text": text})
    assert r.status_code == 200 and r.json() == lm.evaluate(text).to_dict()
    r = post(app, "/api/states", {"run": "tiny", "text": text, "layer": 1, "unit": 7})
    assert r.status_code == 200
    assert r.json()["values"] == lm.states(text)[:, 1, 7].tolist()
    assert (r.json()["layers"], r.json()["units"], r.json()["text"]) == (2, 24, text)
    r = post(app, "/api/units", {"run": "tiny", "text": text, "pattern": "quotes", "top": 5})
    assert r.status_code == 200
    assert r.json()["units"] == [u.to_dict() for u in lm.units(text, "quotes", top=5)]
    assert r.json()["signal"] == rnnlab.pattern_signal(text, "quotes")
    signal = [float(c == "e") for c in text]  # what the page sends for a regex
    r = post(app, "/api/units", {"run": "tiny", "text": text, "signal": signal, "top": 3})
    assert r.json()["units"] == [u.to_dict() for u in lm.units(text, signal, top=3)]
    assert r.json()["pattern"] is None
    r = call(app, "GET", "/api/metrics", params={"run": "tiny"})
    assert r.status_code == 200 and r.json() == {"run": "tiny", "epochs": lm.training_log()}


def test_two_runs_side_by_side(lm, trained):
    twin = rnnlab.load(trained.run_dir)
    named = run_names([lm, twin])
    assert list(named) == ["tiny", "tiny-2"]
    app = create_app(named)
    answers = [post(app, "/api/predict", {"run": name, "prefix": "the"}).json() for name in named]
    assert answers[0] == answers[1]


# -- the page and its assets ----------------------------------------------------------------------


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text += data


def test_the_page_is_self_contained_under_its_csp(app):
    r = call(app, "GET", "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
    assert "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    page = _Tags()
    page.feed(r.text)
    assert page.script_text.strip() == ""  # no inline script: the CSP would block it
    for tag, attrs in page.tags:
        assert "style" not in attrs, tag
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        for name in ("src", "href"):
            if attrs.get(name):
                assert attrs[name].startswith("/static/"), attrs[name]  # offline: no CDN
                assert call(app, "GET", attrs[name]).status_code == 200
    testids = {attrs.get("data-testid") for _, attrs in page.tags}
    assert {"prefix", "generate", "text", "score", "rank", "curves"} <= testids
    for name in ("app.js", "style.css"):
        source = (STATIC / name).read_text(encoding="utf-8")
        assert not re.search(r"https?://", source), name  # no asset from elsewhere
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    assert "innerHTML" not in script and "eval(" not in script  # text goes in as text
    assert call(app, "GET", "/docs").status_code == 404  # Swagger UI loads from a CDN: off
    schema = call(app, "GET", "/api/openapi.json").json()
    assert {"/api/runs", "/api/predict", "/api/score", "/api/states", "/api/units"} <= set(
        schema["paths"]
    )


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example"])
def test_a_foreign_host_header_is_refused(app, host):
    r = call(app, "GET", "/api/runs", headers={"Host": host})
    assert_clean_error(r, 400, "Host header not allowed")
    r = post(app, "/api/predict", {"run": "tiny", "prefix": "the"}, headers={"Host": host})
    assert r.status_code == 400


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "LAB.example"])
def test_loopback_and_allowed_hosts_are_served(app, host):
    assert call(app, "GET", "/api/runs", headers={"Host": host}).status_code == 200


def test_host_names():
    assert host_name("[::1]:8000") == "[::1]" and host_name("LocalHost:80") == "localhost"
    assert host_name("::1") == "::1"  # not a Host header a browser sends: refused
    hosts = allowed_hosts("0.0.0.0", ["box.lan", "::2"])
    assert {"localhost", "127.0.0.1", "[::1]", "box.lan", "[::2]"} == hosts


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},  # another port is another origin
        {"Origin": "null"},
        {"Origin": "https://127.0.0.1:8000"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_cross_origin_compute_request_is_refused(app, headers):
    r = post(app, "/api/predict", {"run": "tiny", "prefix": "the"}, headers=headers)
    assert_clean_error(r, 403, "refused")
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    "headers", [{}, {"Origin": BASE}, {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}]
)
def test_a_same_origin_request_is_served(app, headers):
    r = post(app, "/api/predict", {"run": "tiny", "prefix": "the"}, headers=headers)
    assert r.status_code == 200


def test_an_oversize_body_is_refused_before_it_is_read(app):
    big = {"run": "tiny", "text": "a" * 300_000}
    assert_clean_error(post(app, "/api/score", big), 413, "at most 262,144 bytes")

    async def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b" " * 10_000

    r = call(
        app, "POST", "/api/score", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_clean_error(r, 413, "too large")


@pytest.mark.parametrize(
    "url, body, fragment",
    [
        ("/api/predict", {"prefix": "x" * 1001}, "prefix: String should have at most 1000"),
        ("/api/predict", {"prefix": ""}, "prefix: String should have at least 1"),
        ("/api/predict", {"prefix": "the", "steps": 2001}, "steps: Input should be less than"),
        ("/api/predict", {"prefix": "the", "beam": 17}, "beam: Input should be less than"),
        ("/api/predict", {"prefix": "the", "show": 51}, "show: Input should be less than"),
        ("/api/predict", {"prefix": "the", "top_p": 0}, "top_p: Input should be greater"),
        ("/api/predict", {"prefix": "the", "seed": -1}, "seed: Input should be greater"),
        ("/api/predict", {"prefix": "the", "strategy": "best"}, "strategy: Input should be"),
        ("/api/predict", {"prefix": "the", "temp": 1}, "temp: Extra inputs are not permitted"),
        ("/api/score", {"text": "a" * 2001}, "text: String should have at most 2000"),
        ("/api/states", {"text": "the", "layer": -1}, "layer: Input should be greater"),
        ("/api/units", {"text": "the cat", "pattern": "regex"}, "pattern: Input should be"),
    ],
)
def test_fields_out_of_their_limits_are_refused_cleanly(app, url, body, fragment):
    assert_clean_error(post(app, url, {"run": "tiny", **body}), 422, fragment)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b'{"run": "tiny", "prefix": "the", "temperature": NaN}', "temperature"),
        (b'{"run": "tiny", "prefix": "the", "top_p": Infinity}', "top_p"),
        (b'{"run": "tiny", "prefix": "\\ud800"}', "prefix: Input should be a valid string"),
        (b'{"run": "tiny", "prefix": ', "not valid JSON"),
        (b"[1, 2]", "invalid request"),
    ],
)
def test_malformed_bodies_are_refused_cleanly(app, raw, fragment):
    r = call(app, "POST", "/api/predict", content=raw, headers={"Content-Type": "application/json"})
    assert_clean_error(r, 422, fragment)


@pytest.mark.parametrize(
    "url, body, status, fragment",
    [
        ("/api/predict", {"run": "nope", "prefix": "the"}, 404, "unknown run 'nope'"),
        ("/api/predict", {"run": "tiny", "prefix": "天"}, 400, "not in the model's vocabulary"),
        ("/api/score", {"run": "tiny", "text": "the €"}, 400, "not in the model's vocabulary"),
        ("/api/states", {"run": "tiny", "text": "the", "layer": 2}, 400, "layer 2 does not"),
        ("/api/states", {"run": "tiny", "text": "the", "unit": 24}, 400, "unit 24 does not"),
        ("/api/units", {"run": "tiny", "text": "the cat"}, 400, "a pattern name or a signal"),
        ("/api/units", {"run": "tiny", "text": "the cat", "signal": [1, 0]}, 400, "2 values"),
        ("/api/units", {"run": "tiny", "text": "aaa", "pattern": "quotes"}, 400, "same at every"),
    ],
)
def test_questions_the_model_cannot_answer(app, url, body, status, fragment):
    assert_clean_error(post(app, url, body), status, fragment)


def test_unknown_paths_and_methods(app):
    assert_clean_error(call(app, "GET", "/api/nothing"), 404, "Not Found")
    assert_clean_error(call(app, "GET", "/api/predict"), 405, "Method Not Allowed")
    assert_clean_error(call(app, "GET", "/api/metrics", params={"run": "x"}), 404, "unknown run")
    assert_clean_error(call(app, "GET", "/static/../app.py"), 404)


def test_a_bug_answers_500_without_its_traceback(lm, monkeypatch, trained):
    def broken(text: str) -> list:
        raise RuntimeError(f"internal detail at {trained.run_dir}")

    monkeypatch.setattr(lm, "score", broken)
    app = create_app({"tiny": lm})
    r = post(app, "/api/score", {"run": "tiny", "text": "the cat"}, raise_errors=False)
    assert_clean_error(r, 500, "internal error")
    assert "internal detail" not in r.text


# -- the worker pool: busy and slow requests get 503, never a hung server -------------------------


def _blocking(monkeypatch, lm) -> tuple[threading.Event, threading.Event]:
    started, release = threading.Event(), threading.Event()
    real = lm.predict

    def slow(*args, **kwargs):
        started.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(lm, "predict", slow)
    return started, release


def test_a_full_pool_answers_503_with_retry_after(lm, monkeypatch):
    started, release = _blocking(monkeypatch, lm)
    app = create_app({"tiny": lm}, ServeConfig(workers=1, queue=0))
    body = {"run": "tiny", "prefix": "the"}

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            first = asyncio.create_task(client.post("/api/predict", json=body))
            while not started.is_set():
                await asyncio.sleep(0.01)
            second = await client.post("/api/predict", json=body)  # the one thread is busy
            release.set()
            done = await first
            third = await client.post("/api/predict", json=body)  # the slot is free again
            return done, second, third

    done, busy, after = asyncio.run(scenario())
    assert done.status_code == 200 and after.status_code == 200
    assert_clean_error(busy, 503, "busy")
    assert busy.headers["retry-after"] == "1"
    assert app.state.pool.held == 0


def test_a_slow_request_answers_503_and_frees_its_slot_when_done(lm, monkeypatch):
    started, release = _blocking(monkeypatch, lm)
    app = create_app({"tiny": lm}, ServeConfig(workers=1, queue=0, timeout=0.2))
    r = post(app, "/api/predict", {"run": "tiny", "prefix": "the"})
    assert_clean_error(r, 503, "took longer than 0.2 s")
    assert int(r.headers["retry-after"]) >= 1
    assert app.state.pool.held == 1  # the thread still works: its slot stays taken...
    release.set()
    deadline = time.monotonic() + 5
    while app.state.pool.held and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.state.pool.held == 0  # ...until it ends
    monkeypatch.undo()
    assert post(app, "/api/predict", {"run": "tiny", "prefix": "the"}).status_code == 200


def test_serve_config_is_validated():
    for bad, message in [
        ({"workers": 0}, "--workers must be at least 1"),
        ({"queue": -1}, "--queue must be 0 or more"),
        ({"timeout": 0}, "--timeout must be a positive"),
    ]:
        with pytest.raises(rnnlab.UsageError, match=message):
            ServeConfig(**bad)
    with pytest.raises(rnnlab.UsageError, match="at least one run"):
        create_app({})


# -- the command ----------------------------------------------------------------------------------


def test_a_missing_or_corrupt_run_exits_3_before_listening(tmp_path, trained, capsys):
    assert main(["serve", str(tmp_path / "nowhere"), "--port", "0"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "does not exist" in err and len(err.splitlines()) == 1
    assert main(["serve", str(trained.run_dir), str(tmp_path), "--port", "0"]) == 3
    assert "no checkpoint" in capsys.readouterr().err


def test_a_busy_port_and_bad_flags_exit_2(trained, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(trained.run_dir), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", str(trained.run_dir), "--port", "70000"]) == 2
    assert "--port must be between 0 and 65535" in capsys.readouterr().err
    assert main(["serve", str(trained.run_dir), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_another_host_is_served_with_a_warning(trained, capsys, monkeypatch):
    import uvicorn

    served = {}

    def run(self, sockets):
        served["address"] = sockets[0].getsockname()[0]

    monkeypatch.setattr(uvicorn.Server, "run", run)
    # Bound but never listening: run() is replaced, so nothing is exposed.
    assert main(["serve", str(trained.run_dir), "--host", "0.0.0.0", "--port", "0"]) == 0
    out, err = capsys.readouterr()
    assert "warning: listening on 0.0.0.0" in err and "http://127.0.0.1:" in out
    assert served["address"] == "0.0.0.0"
    assert main(["serve", str(trained.run_dir), "--port", "0"]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err and "rnnlab playground: 1 run (tiny) at http://127.0.0.1:" in out


def test_the_installed_command_serves_until_interrupted(trained):
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", "serve", str(trained.run_dir), "--port", "0",
         "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        r = httpx.get(url + "api/runs", timeout=10)
        assert r.status_code == 200 and r.json()["runs"][0]["name"] == "tiny"
        r = httpx.post(url + "api/predict", json={"run": "tiny", "prefix": "the"}, timeout=10)
        # No options: the server's defaults are the API's (it used to list 10 candidates, not 5).
        assert r.json() == prediction_dict(trained.model.predict("the")[0])
        assert httpx.get(url, headers={"Host": "evil.example"}, timeout=10).status_code == 400
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and err.strip().endswith("stopped")


def test_json_answers_are_strict(app):
    r = post(app, "/api/predict", {"run": "tiny", "prefix": "the", "steps": 5})
    json.loads(r.text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert Path(STATIC / "index.html").is_file()


def test_websockets_are_refused(app):
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/", "headers": [(b"host", b"127.0.0.1")]}
    asyncio.run(app(scope, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]

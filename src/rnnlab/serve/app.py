"""The playground's web app: JSON endpoints over `rnnlab.api`, and the page that calls them.

Every answer comes from the same `LanguageModel` methods a notebook calls and the CLI prints
(`predict`, `score`, `evaluate`, `states`, `units`), with the CLI's `--json` keys. The runs are
loaded once, at start-up, and a request names one of them: no file path or URL ever comes from
a request. Model work runs on a `ComputePool` off the event loop; `Guard` checks Host, Origin and
body size first (`rnnlab.serve.security`). Errors are one line of JSON, `{"error": "..."}`,
without traceback or local path.

Endpoints (the schema is at /api/openapi.json):
    GET  /api/runs       the runs served, their configs, the limits and the unit patterns
    GET  /api/metrics    a run's training curves (metrics.csv)
    POST /api/predict    next-character distribution (top `show`) and a `num_preds` continuation
    POST /api/score      per-character surprisal and the model's top alternatives
    POST /api/evaluate   loss, perplexity and bits/char of a text
    POST /api/states     one hidden unit's activation after every character
    POST /api/units      the units that track a pattern on a text, by |Pearson r|
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException

from rnnlab.api import (
    PATTERNS,
    LanguageModel,
    RnnlabError,
    UsageError,
    pattern_signal,
    prediction_dict,
    rank_units,
    scores_dict,
)
from rnnlab.generate import GenerateConfig
from rnnlab.jsonout import strict_dumps
from rnnlab.serve.config import (
    LIMITS,
    MAX_ALTERNATIVES,
    MAX_PREFIX,
    MAX_TEXT,
    MAX_TOP_UNITS,
    PREDICT_LIMITS,
    ServeConfig,
)
from rnnlab.serve.security import SECURITY_HEADERS, Busy, ComputePool, Guard, allowed_hosts
from rnnlab.version import __version__

STATIC = Path(__file__).resolve().parent / "static"
BUILTIN_PATTERNS = tuple(p for p in PATTERNS if p != "regex")  # a regex runs in the page

# -- request and answer shapes (the OpenAPI schema comes from these) ------------------------------


RunName = Annotated[str, Field(min_length=1, max_length=200, description="a run's name")]
# (pydantic refuses a lone surrogate, which JSON can carry but no model knows, as not a string.)
Prefix = Annotated[str, Field(min_length=1, max_length=MAX_PREFIX)]
Text = Annotated[str, Field(min_length=2, max_length=MAX_TEXT)]
AnyText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def schema_fields(cls: type, limits: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """pydantic fields made from a config's declaration (`rnnlab.options`), for `create_model`.

    Each field keeps its name, type, default, choices, help and aliases; its range is the
    declared one, tightened by `limits` (the server's lower caps): a limit that would widen a
    declared bound is ignored, so the server never accepts what the library refuses.
    """
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        optional = f.default is None
        hint = hints[f.name]  # e.g. `float | None`: the type is float, None the default
        tp = [t for t in typing.get_args(hint) or (hint,) if t is not type(None)][0]
        if "choices" in meta:
            tp = Literal[tuple(meta["choices"])]
        bounds: dict[str, Any] = {k: meta[k] for k in ("ge", "gt", "le") if k in meta}
        for key, value in limits.get(f.name, {}).items():
            tighter = max if key in ("ge", "gt") else min
            bounds[key] = tighter(bounds[key], value) if key in bounds else value
        if tp is float:
            bounds["allow_inf_nan"] = False
        if bounds:
            tp = Annotated[tp, Field(**bounds)]
        aliases = meta.get("aliases", ())
        fields[f.name] = (
            tp | None if optional else tp,
            Field(
                f.default,
                description=meta.get("help"),
                validation_alias=AliasChoices(f.name, *aliases) if aliases else None,
            ),
        )
    return fields


# `rnnlab predict`'s options (GenerateConfig), under the server's own limits; `steps` is also
# accepted for `num_preds`. Both names at once are refused (the second is an unknown field).
PredictRequest = create_model(
    "PredictRequest",
    __base__=Strict,
    run=(RunName, ...),
    prefix=(Prefix, ...),
    **schema_fields(GenerateConfig, PREDICT_LIMITS),
)


class CharProb(BaseModel):
    char: str
    prob: float


class PredictAnswer(BaseModel):
    prefix: str
    next: list[CharProb]
    continuation: str
    log_prob: float | None  # nats; None if the continuation was impossible (-inf)


class ScoreRequest(Strict):
    run: RunName
    text: Text
    top: int = Field(3, ge=1, le=MAX_ALTERNATIVES, description="alternatives per character")


class ScoredChar(BaseModel):
    char: str
    bits: float | None
    top: list[CharProb]  # what the model expected here, likeliest first


class ScoreAnswer(BaseModel):
    text: str
    chars: list[ScoredChar]  # text[1:], the first character being context only
    mean_bits: float | None


class EvaluateRequest(Strict):
    run: RunName
    text: Text


class EvaluateAnswer(BaseModel):
    loss: float | None
    ppl: float | None
    bpc: float | None
    chars: int


class StatesRequest(Strict):
    run: RunName
    text: AnyText
    layer: int = Field(0, ge=0, le=1_000)
    unit: int = Field(0, ge=0, le=1_000_000)


class StatesAnswer(BaseModel):
    text: str
    layer: int
    unit: int
    layers: int
    units: int  # per layer (twice the hidden size when bidirectional)
    values: list[float]  # the unit's activation after each character


class UnitsRequest(Strict):
    run: RunName
    text: Text
    pattern: Literal[BUILTIN_PATTERNS] | None = Field(  # type: ignore[valid-type]
        None, description="a built-in pattern; or give `signal` instead"
    )
    signal: list[Finite] | None = Field(
        None, max_length=MAX_TEXT, description="your own numbers, one per character"
    )
    top: int = Field(10, ge=1, le=MAX_TOP_UNITS)


class UnitAnswer(BaseModel):
    layer: int
    unit: int
    r: float


class UnitsAnswer(BaseModel):
    pattern: str | None
    signal: list[float]
    units: list[UnitAnswer]


class RunInfo(BaseModel):
    name: str
    corpus: str
    vocab_size: int
    parameters: int
    checkpoint: str | None
    layers: int
    units: int
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]


class RunsAnswer(BaseModel):
    runs: list[RunInfo]
    limits: dict[str, int]
    patterns: dict[str, str]


class MetricsAnswer(BaseModel):
    run: str
    epochs: list[dict[str, int | float | None]]


class ErrorAnswer(BaseModel):
    error: str


# -- JSON out -------------------------------------------------------------------------------------


class StrictJSON(JSONResponse):
    """Strict JSON as `--json` prints it: inf/nan (a diverged model) become null.

    Text is sent as UTF-8; a string that cannot be (a lone surrogate echoed in a message) is
    sent escaped instead of failing.
    """

    def render(self, content: Any) -> bytes:
        try:
            return strict_dumps(content).encode("utf-8")
        except UnicodeEncodeError:
            return strict_dumps(content, ensure_ascii=True).encode("ascii")


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> StrictJSON:
    return StrictJSON({"error": message}, status_code=status, headers=dict(headers or {}))


def _validation_message(exc: RequestValidationError) -> str:
    """Where and what, never the input or the schema's internals: `prefix: String should ...`."""
    parts = []
    for e in exc.errors()[:3]:
        if e.get("type") == "json_invalid":
            parts.append("the body is not valid JSON")
            continue
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        msg = str(e.get("msg", "invalid value"))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid request: " + "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error is one line of JSON with its status: no traceback, no local path, ever."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> StrictJSON:
        return _error(422, _validation_message(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> StrictJSON:
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy) -> StrictJSON:
        return _error(503, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(RnnlabError)
    async def refused(request: Request, exc: RnnlabError) -> StrictJSON:
        return _error(400, str(exc))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> StrictJSON:
        # Sent from the outermost layer, past `Guard`: the security headers go on here.
        headers = {k.decode(): v.decode() for k, v in SECURITY_HEADERS}
        return _error(500, "internal error: the server could not answer this request", headers)


# -- the app --------------------------------------------------------------------------------------


def create_app(models: Mapping[str, LanguageModel], config: ServeConfig | None = None) -> FastAPI:
    """The playground for `models` (name -> loaded run), in the order given.

    `app.state.pool` is its `ComputePool`; the security middleware wraps everything.
    """
    config = config or ServeConfig()
    if not models:
        raise UsageError("give at least one run to serve")
    models = dict(models)
    pool = ComputePool(config.workers, config.queue, config.timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown()

    app = FastAPI(
        title="rnnlab playground",
        version=__version__,
        description="Ask trained character-level language models for next characters, "
        "continuations, surprisal and hidden states.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # the interactive docs load scripts from a CDN: not offline, not our CSP
        redoc_url=None,
        default_response_class=StrictJSON,
        lifespan=lifespan,
        responses={
            400: {"model": ErrorAnswer, "description": "a question the model cannot answer"},
            404: {"model": ErrorAnswer, "description": "no run of that name"},
            422: {"model": ErrorAnswer, "description": "a field out of its limits"},
            503: {"model": ErrorAnswer, "description": "busy or too slow: retry later"},
        },
    )
    app.state.pool = pool
    app.state.models = models
    app.add_middleware(
        Guard,
        hosts=allowed_hosts(config.listen_host, config.allow_hosts),
        max_body=config.max_body,
    )
    infos = {name: _run_info(name, lm) for name, lm in models.items()}

    def model(name: str) -> LanguageModel:
        if name not in models:
            raise HTTPException(
                404, f"unknown run {name!r}: this server has {', '.join(map(repr, models))}"
            )
        return models[name]

    _install_error_handlers(app)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/runs", response_model=RunsAnswer)
    async def runs() -> dict[str, Any]:
        """The runs this server holds (first = default), the request limits, the patterns."""
        return {
            "runs": list(infos.values()),
            "limits": LIMITS,
            "patterns": {p: PATTERNS[p] for p in PATTERNS},
        }

    @app.get("/api/metrics", response_model=MetricsAnswer)
    async def metrics(run: Annotated[str, Query(min_length=1, max_length=200)]) -> dict[str, Any]:
        """A run's metrics.csv: train and held-out figures per epoch (read now: live runs grow)."""
        lm = model(run)
        return {"run": run, "epochs": await pool.run(lm.training_log)}

    @app.post("/api/predict", response_model=PredictAnswer)
    async def predict(req: PredictRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        """`rnnlab predict --json`: the top `show` next characters, a `num_preds` continuation."""
        lm = model(req.run)
        config = GenerateConfig(**req.model_dump(exclude={"run", "prefix"}))
        preds = await pool.run(lm.predict, req.prefix, config)
        return prediction_dict(preds[0])

    @app.post("/api/score", response_model=ScoreAnswer)
    async def score(req: ScoreRequest) -> dict[str, Any]:
        """`rnnlab score --json`, each character with the model's `top` alternatives."""
        lm = model(req.run)

        def work() -> dict[str, Any]:
            answer = scores_dict(req.text, lm.score(req.text))
            for entry, top in zip(answer["chars"], lm.alternatives(req.text, req.top), strict=True):
                entry["top"] = [{"char": c, "prob": p} for c, p in top]
            return answer

        return await pool.run(work)

    @app.post("/api/evaluate", response_model=EvaluateAnswer)
    async def evaluate(req: EvaluateRequest) -> dict[str, Any]:
        """`rnnlab evaluate --json` on the text given."""
        lm = model(req.run)
        m = await pool.run(lm.evaluate, req.text)
        return {"loss": m.loss, "ppl": m.ppl, "bpc": m.bpc, "chars": m.chars}

    @app.post("/api/states", response_model=StatesAnswer)
    async def states(req: StatesRequest) -> dict[str, Any]:
        """One unit's activation after each character (only that unit: a page needs no more)."""
        lm = model(req.run)
        info = infos[req.run]
        if req.layer >= info["layers"]:
            raise UsageError(
                f"layer {req.layer} does not exist: the model has {info['layers']} "
                f"(0 to {info['layers'] - 1})"
            )
        if req.unit >= info["units"]:
            raise UsageError(
                f"unit {req.unit} does not exist: a layer has {info['units']} "
                f"(0 to {info['units'] - 1})"
            )

        def work() -> list[float]:
            return lm.states(req.text)[:, req.layer, req.unit].tolist()

        return {
            "text": req.text,
            "layer": req.layer,
            "unit": req.unit,
            "layers": info["layers"],
            "units": info["units"],
            "values": await pool.run(work),
        }

    @app.post("/api/units", response_model=UnitsAnswer)
    async def units(req: UnitsRequest) -> dict[str, Any]:
        """The units whose activations correlate most with a pattern on this text."""
        lm = model(req.run)
        if (req.pattern is None) == (req.signal is None):
            raise UsageError("give a pattern name or a signal (one number per character)")
        signal = req.signal if req.pattern is None else pattern_signal(req.text, req.pattern)

        def work() -> list[dict[str, Any]]:
            return [u.to_dict() for u in rank_units(lm.states(req.text), signal, req.top)]

        return {"pattern": req.pattern, "signal": signal, "units": await pool.run(work)}

    return app


def _run_info(name: str, lm: LanguageModel) -> dict[str, Any]:
    info = lm.describe()
    info["name"] = name
    info["layers"] = lm.run.model_config.layers
    info["units"] = lm.run.model_config.hidden * (2 if lm.run.model_config.bidirectional else 1)
    return info


def run_names(models: list[LanguageModel]) -> dict[str, LanguageModel]:
    """Name each run by its directory; a repeated name gets -2, -3, ... in the order given."""
    named: dict[str, LanguageModel] = {}
    for lm in models:
        name, n = lm.name, 1
        while name in named:
            n += 1
            name = f"{lm.name}-{n}"
        named[name] = lm
    return named

"""The setlist routes write their JSON themselves (FastAPI does not validate and dump
the answer a second time): the bytes must be those of the response models, and the
values those of the recompute."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from api_stub.app import create_app
from stats.setlist_models import GapRow, VelocityRow
from stats.settings import Settings
from tests.conftest import Backend
from tests.setlist_oracle import SetlistOracle, recorded
from tests.test_setlists_property import event_sets, fresh_store, play_dates
from worker.connections import Connections

FEW = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
GAP_ROWS = TypeAdapter(list[GapRow])
VELOCITY_ROWS = TypeAdapter(list[VelocityRow])


def plain(value: Any) -> Any:
    """An oracle answer as JSON data (dates as ISO strings)."""
    return json.loads(json.dumps(value, default=str))


@given(data=st.data())
@FEW
def test_routes_answer_the_json_of_the_models(backend: Backend, data: st.DataObject) -> None:
    base, events = data.draw(event_sets(), label="events")
    oracle = SetlistOracle(events)
    dates = play_dates(oracle) or [base]
    # STATSWORKER_TODAY, like as_of, lies within the years events may carry.
    days = [d for d in [*dates, dates[-1] + dt.timedelta(days=1)] if d.year <= 2100]
    kept = data.draw(st.sampled_from(days), label="kept")
    with fresh_store(backend) as store:
        store.apply(events, kept)
        conns = Connections(
            Settings(key_prefix=store.prefix, today=kept), backend.client, backend.raw
        )
        client = TestClient(create_app(conns))
        for vertical in ("band", "side"):
            if vertical not in oracle.known:
                assert client.get(f"/analytics/stats/{vertical}").status_code == 404
                continue
            near = {kept, dates[0], dates[-1] - dt.timedelta(days=30)}
            for as_of in sorted(d for d in near if 1900 <= d.year <= 2100):  # else 422
                q = f"as_of={as_of.isoformat()}"

                def get(path: str, want: Any, model_json: bytes) -> None:
                    answer = client.get(f"/analytics/{path}")
                    assert answer.status_code == 200, (path, answer.text)
                    assert answer.headers["content-type"] == "application/json"
                    assert answer.content == model_json, path
                    assert answer.json() == plain(want), path

                for song in [*oracle.songs(vertical), "never-played"]:
                    want = oracle.song(vertical, song, as_of)
                    found = store.song(vertical, song, as_of)
                    if want is None:
                        assert found is None
                        answer = client.get(f"/analytics/songs/{vertical}/{song}?{q}")
                        assert answer.status_code == 404 and "detail" in answer.json()
                    else:
                        assert found is not None
                        get(f"songs/{vertical}/{song}?{q}", want, found.model_dump_json().encode())
                for min_plays, limit in ((0, 200), (2, 1), (5, 50)):
                    get(
                        f"gaps/{vertical}?{q}&min_plays={min_plays}&limit={limit}",
                        oracle.gaps(vertical, as_of, min_plays, limit),
                        GAP_ROWS.dump_json(store.gaps(vertical, as_of, min_plays, limit)),
                    )
                for limit in (1, 50):
                    get(
                        f"velocity/{vertical}?{q}&limit={limit}",
                        oracle.velocity(vertical, as_of, limit),
                        VELOCITY_ROWS.dump_json(store.velocity(vertical, as_of, limit)),
                    )
                for period in ("month", "quarter"):
                    get(
                        f"trends/{vertical}?{q}&period={period}",
                        oracle.trends(vertical, as_of, period),
                        store.trends(vertical, as_of, period).model_dump_json().encode(),
                    )
                get(
                    f"stats/{vertical}?{q}",
                    oracle.stats(vertical, as_of),
                    store.stats(vertical, as_of).model_dump_json().encode(),
                )
                for days, gap, shows in ((365, 180, None), (100_000, 30, 2), (100_000, 0, None)):
                    extra = f"&gap_shows_threshold={shows}" if shows is not None else ""
                    get(
                        f"bustouts/{vertical}?{q}&days={days}&gap_threshold={gap}{extra}",
                        oracle.bustouts(vertical, as_of, days, gap, shows),
                        store.bustouts(vertical, as_of, days, gap, shows)
                        .model_dump_json()
                        .encode(),
                    )
                for days in (30, 100_000):
                    get(
                        f"debut-songs/{vertical}?{q}&days={days}",
                        oracle.debuts(vertical, as_of, days),
                        store.debuts(vertical, as_of, days).model_dump_json().encode(),
                    )


def test_openapi_still_documents_every_setlist_answer(backend: Backend) -> None:
    conns = Connections(
        Settings(key_prefix=backend.prefix, today=dt.date(2024, 1, 1)), backend.client, backend.raw
    )
    paths = create_app(conns).openapi()["paths"]
    expected = {
        "/analytics/gaps/{vertical}": "GapRow",
        "/analytics/velocity/{vertical}": "VelocityRow",
        "/analytics/trends/{vertical}": "Trends",
        "/analytics/stats/{vertical}": "VerticalStats",
        "/analytics/bustouts/{vertical}": "Bustouts",
        "/analytics/debut-songs/{vertical}": "Debuts",
        "/analytics/songs/{vertical}/{song}": "SongFigures",
    }
    for path, model in expected.items():
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert json.dumps(schema).endswith(f'"#/components/schemas/{model}"}}') or (
            f"#/components/schemas/{model}" in json.dumps(schema)
        ), path


def test_a_parameter_sent_empty_means_its_default(backend: Backend) -> None:
    """The SPEC writes its routes as ``...&gap_shows_threshold=&as_of=``: a front end that
    sends blanks gets the defaults, not a 422."""
    plays = [
        recorded(f"p{i}", song, f"s{i}", dt.date(2023, 1, 1) + dt.timedelta(days=200 * i))
        for i, song in enumerate(["a", "b", "a", "a", "b", "a"])
    ]
    today = dt.date(2026, 1, 1)
    with fresh_store(backend) as store:
        store.apply(plays, today)
        conns = Connections(
            Settings(key_prefix=store.prefix, today=today), backend.client, backend.raw
        )
        client = TestClient(create_app(conns))
        for url in (
            "/analytics/bustouts/band?days=100000&gap_threshold=1",
            "/analytics/gaps/band?min_plays=1",
            "/analytics/songs/band/a",
            "/analytics/stats/band",
        ):
            plain_answer = client.get(url)
            assert plain_answer.status_code == 200, url
            blank = client.get(f"{url}{'&' if '?' in url else '?'}as_of=&gap_shows_threshold=")
            assert blank.status_code == 200, url
            assert blank.json() == plain_answer.json(), url
        assert client.get("/analytics/bustouts/band?days=100000&gap_threshold=1").json()[
            "bustouts"
        ], "the comparison above must see bustouts"
        for url, blanks in (  # every other parameter too, alone or several, `=` or not
            ("/analytics/gaps/band", "min_plays=&limit="),
            ("/analytics/velocity/band", "limit"),
            ("/analytics/trends/band", "period=&as_of"),
            ("/analytics/bustouts/band", "days=&gap_threshold=&gap_shows_threshold=&as_of="),
            ("/analytics/debut-songs/band", "days="),
        ):
            plain_answer = client.get(url)
            assert plain_answer.status_code == 200, url
            blank = client.get(f"{url}?{blanks}")
            assert (blank.status_code, blank.json()) == (200, plain_answer.json()), url
        assert client.get("/analytics/gaps/band?limit=0").status_code == 422  # not blank


def test_head_answers_as_get_without_the_body(backend: Backend) -> None:
    with fresh_store(backend) as store:
        store.apply([recorded("p1", "a", "s1", dt.date(2024, 1, 1))], dt.date(2024, 2, 1))
        conns = Connections(
            Settings(key_prefix=store.prefix, today=dt.date(2024, 2, 1)),
            backend.client,
            backend.raw,
        )
        client = TestClient(create_app(conns))
        for url in ("/analytics/stats/band", "/analytics/songs/band/a", "/analytics/gaps/zz"):
            got, head = client.get(url), client.head(url)
            assert head.status_code == got.status_code, url
            assert head.content == b"", url
            assert head.headers["content-length"] == str(len(got.content)), url
            assert head.headers["content-type"] == got.headers["content-type"], url
        head_events = client.head("/events")
        assert (head_events.status_code, head_events.headers["allow"]) == (405, "POST")
        assert client.post("/events", json=[]).status_code == 202  # POST untouched
        # A 405 of a GET route names HEAD beside GET, as it is served.
        for url in ("/analytics/stats/band", "/health"):
            refused = client.delete(url)
            assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD"), url


def test_openapi_documents_the_errors_and_bodies_the_api_answers(backend: Backend) -> None:
    """What a client generated from the schema must expect (found missing by fuzzing
    the API against its own schema)."""
    conns = Connections(
        Settings(key_prefix=backend.prefix, today=dt.date(2024, 1, 1)), backend.client, backend.raw
    )
    schema = create_app(conns).openapi()
    detail = {"$ref": "#/components/schemas/Detail"}
    reads = [path for path in schema["paths"] if path.startswith("/analytics/")]
    assert len(reads) == 11
    for path in reads:
        answers = schema["paths"][path]["get"]["responses"]
        for status in ("404", "503"):
            assert answers[status]["content"]["application/json"]["schema"] == detail, path
        for param in schema["paths"][path]["get"]["parameters"]:
            if param["name"] in ("as_of", "start", "end"):
                assert param["schema"]["pattern"].startswith("^(19"), (path, param)
            if param["name"] in ("limit", "days", "min_plays", "gap_threshold"):
                # JSON Schema's words: pydantic's own (ge, le) mean nothing to a client
                assert {"minimum", "maximum"} <= param["schema"].keys(), (path, param)
                assert not {"ge", "le"} & param["schema"].keys(), (path, param)
    events = schema["paths"]["/events"]["post"]
    assert set(events["responses"]) >= {"202", "401", "413", "422", "503"}
    unprocessable = events["responses"]["422"]["content"]["application/json"]["schema"]
    assert detail in unprocessable["anyOf"]
    assert events["requestBody"]["required"] is True
    refs = re.findall(r'"#/components/schemas/(\w+)"', json.dumps(events["requestBody"]))
    assert set(refs) == {"PerformanceRecorded", "PerformanceRetracted", "VideoPosted",
                         "VideoMetricsUpdated", "VideoDeleted"}  # fmt: skip
    assert set(refs) <= schema["components"]["schemas"].keys()
    assert "text/plain" in schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "503" in schema["paths"]["/health"]["get"]["responses"]
    series = schema["paths"]["/analytics/insights/{creator}/time-series"]["get"]
    assert detail in series["responses"]["422"]["content"]["application/json"]["schema"]["anyOf"]

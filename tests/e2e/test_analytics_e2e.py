"""The analysts' read API over real HTTP through `python -m devhost`, every answer checked against
schemas/openapi.json with openapi-core."""
import csv
import io
import json
import urllib.error
import urllib.request

import pytest
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse

import schemas
from devhost.testing import start_host_process
from shared.auth import Role
from tests import auth
from tests.documents import make_document

pytestmark = pytest.mark.e2e

SAMPLE_BINS = [0, 0, 0, 6, 28, 28, 14, 5, 0, 0]


@pytest.fixture(scope="module")
def openapi():
    return OpenAPI.from_dict(schemas.resource("openapi.json"),
                             config=Config(extra_media_type_deserializers={"text/csv": bytes.decode}))


@pytest.fixture
def host(database_url, vault_storage, vault_table):
    env = {"MARKR_DATABASE_URL": database_url, "VaultStorage": vault_storage, "MARKR_VAULT_TABLE": vault_table,
           "MARKR_BUS": "local", "MARKR_IMPORT_WAIT_SECONDS": "60"}
    process = start_host_process(env).wait_ready()
    yield process
    process.close()


class Api:
    """Every request of this module goes through `call`, which sends a token with the role the route
    needs (unless `headers` bring credentials, or `anonymous`) and checks the answer against the
    OpenAPI document."""

    def __init__(self, host, openapi):
        self.root = host.base_url.removesuffix("/api")
        self.openapi = openapi

    def call(self, method, path, body=None, headers=None, anonymous=False):
        headers = dict(headers or {}) if anonymous else auth.with_auth(method, path, headers)
        req = urllib.request.Request(self.root + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, got, data = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            status, got, data = err.code, dict(err.headers), err.read()
        mimetype = (got.get("Content-Type") or "").split(";")[0] or None
        route, _, query = path.partition("?")
        args = dict(p.split("=", 1) for p in query.split("&")) if query else {}
        self.openapi.validate_response(
            MockRequest(self.root, method.lower(), route, args=args, headers=headers),
            MockResponse(data, status_code=status, content_type=mimetype, headers=got))
        return status, got, data

    def get(self, path, headers=None, anonymous=False):
        status, got, data = self.call("GET", path, headers=headers, anonymous=anonymous)
        is_json = got.get("Content-Type", "").startswith("application/json") and data
        return status, got, json.loads(data) if is_json else data

    def post(self, document):
        status, got, data = self.call("POST", "/api/import", document, {"Content-Type": "text/xml+markr"})
        return status, json.loads(data)


@pytest.fixture
def api(host, openapi):
    return Api(host, openapi)


def test_sample_file_through_every_read_endpoint(api, sample_results_xml):
    assert api.get("/api/tests")[2] == {"tests": [], "continuationToken": None}
    status, body = api.post(sample_results_xml)
    assert status == 201, body

    status, _, hist = api.get("/api/results/9863/histogram")
    assert status == 200 and [b["count"] for b in hist["bins"]] == SAMPLE_BINS and hist["total"] == 81

    status, _, tests = api.get("/api/tests")
    assert [(t["testId"], t["studentCount"], t["maxAvailable"], t["submissionCount"]) for t in tests["tests"]] \
        == [("9863", 81, 20, 1)]

    status, _, items = api.get("/api/results/9863/items")
    assert status == 200 and items["questionCount"] == 20 and items["analysedStudents"] == 81
    assert items["dataQuality"]["mismatchedResults"] == 0

    status, headers, data = api.get("/api/results/9863/students.csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert len(rows) == 81 and rows[0] == {"student_number": "002299", "available": "20", "obtained": "13",
                                           "percent": "65", "submissions": "1"}

    status, _, stats = api.get("/api/results/9863/aggregate")
    assert status == 200 and stats["count"] == 81
    assert api.get(f"/api/submissions/{body['submissionId']}")[0] == 200
    assert api.get("/api/openapi.json")[2]["openapi"].startswith("3.1")


@pytest.mark.parametrize("path", ["/api/tests", "/api/results/9863/aggregate", "/api/results/9863/histogram",
                                  "/api/results/9863/items", "/api/results/9863/students.csv",
                                  "/api/openapi.json", "SUBMISSION"])
def test_every_read_answers_304_to_its_etag_until_new_results_land(api, path):
    status, body = api.post(make_document([{"test_id": "9863", "obtained": 10}]))
    path = f"/api/submissions/{body['submissionId']}" if path == "SUBMISSION" else path
    status, headers, _ = api.get(path)
    etag = headers["ETag"]
    assert status == 200 and headers["Cache-Control"]
    status, again, data = api.get(path, {"If-None-Match": etag})
    assert (status, data, again["ETag"]) == (304, b"", etag)
    api.post(make_document([{"test_id": "9863", "student_number": "other", "obtained": 3}]))
    changed = api.get(path, {"If-None-Match": etag})
    if path == "/api/openapi.json" or path.startswith("/api/submissions/"):
        assert changed[0] == 304  # nothing about these changed
    else:
        assert changed[0] == 200 and changed[1]["ETag"] != etag


def test_mismatched_marks_warn_on_the_status_and_count_in_data_quality(api):
    answers = '<answer question="1" marks-available="1" marks-awarded="1">A</answer>'
    document = make_document([{"student_number": "s1", "available": 2, "obtained": 2, "answers": 0, "extra": answers},
                              {"student_number": "s2", "available": 2, "obtained": 1}])
    status, body = api.post(document)
    assert status == 201 and [w["code"] for w in body["warnings"]] == ["marks-mismatch"]
    status, _, state = api.get(f"/api/submissions/{body['submissionId']}")
    assert state["status"] == "completed" and state["warnings"][0]["result"] == 1
    quality = api.get("/api/results/9863/items")[2]["dataQuality"]
    assert quality == {"submissions": 1, "mismatchedResults": 1, "mismatchedSubmissions": 1, "unansweredResults": 0}


def test_catalogue_pages_errors_and_unknown_tests(api):
    for test_id in ("c", "a", "b"):
        api.post(make_document([{"test_id": test_id}]))
    status, _, first = api.get("/api/tests?limit=2")
    assert status == 200 and [t["testId"] for t in first["tests"]] == ["a", "b"] and first["continuationToken"]
    status, _, rest = api.get(f"/api/tests?limit=2&continuationToken={first['continuationToken']}")
    assert [t["testId"] for t in rest["tests"]] == ["c"] and rest["continuationToken"] is None
    assert api.get("/api/tests?limit=0")[2]["error"]["code"] == "invalid-limit"
    assert api.get("/api/tests?continuationToken=zz")[2]["error"]["code"] == "invalid-continuation-token"
    for view in ("histogram", "items", "students.csv"):
        status, _, body = api.get(f"/api/results/nope/{view}")
        assert (status, body["error"]["code"]) == (404, "test-not-found")
    status, _, body = api.get("/api/results/a%E2%80%8Bb/histogram")
    assert (status, body["error"]["code"]) == (400, "invalid-test-id")


PROTECTED_READS = ["/api/tests", "/api/results/9863/aggregate", "/api/results/9863/histogram",
                   "/api/results/9863/items", "/api/results/9863/students.csv"]


def test_refusals_answer_as_the_description_says(api):
    """401 (no token, a bad one) and 403 (a vendor's token on an analyst's route) validate against the
    OpenAPI document like every other answer (Api.call checks each one)."""
    status, body = api.post(make_document([{"test_id": "9863"}]))
    assert status == 201, body
    for path in PROTECTED_READS:
        status, headers, answer = api.get(path, anonymous=True)
        assert (status, answer["error"]["code"]) == (401, "unauthorized"), path
        assert headers["WWW-Authenticate"] == 'Bearer realm="markr"'
        status, headers, answer = api.get(path, {"Authorization": "Bearer not.a.token"})
        assert (status, answer["error"]["code"]) == (401, "invalid-token"), path
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
        status, _, answer = api.get(path, auth.bearer(Role.SUBMIT))
        assert (status, answer["error"]["code"], answer["error"]["requiredRoles"]) == (
            403, "forbidden", ["Results.Read"]), path
    retract = f"/api/ops/submissions/{body['submissionId']}/retract"
    assert api.call("POST", retract, b'{"reason": "x"}', auth.bearer(Role.READ))[0] == 403
    assert api.call("POST", retract, b'{"reason": "x"}', anonymous=True)[0] == 401
    assert api.call("POST", retract, b'{"reason": " "}', {"Content-Type": "application/json"})[0] == 400
    status, _, data = api.call("POST", retract, b'{"reason": "wrong batch"}', {"Content-Type": "application/json"})
    assert status == 200 and json.loads(data)["status"] == "retracted"
    assert api.get("/api/results/9863/histogram")[0] == 404  # its only submission is gone


def test_health_is_bare_for_anyone_and_detailed_for_operators_and_the_description_is_public(api):
    status, _, bare = api.get("/api/health", anonymous=True)
    assert status in (200, 503) and set(bare) == {"status"}
    status, _, detailed = api.get("/api/health")  # Ops.Admin
    assert set(detailed) == {"status", "components"} and detailed["components"]
    assert api.get("/api/health", auth.bearer(Role.READ))[2].keys() == {"status"}
    status, _, doc = api.get("/api/openapi.json", anonymous=True)
    assert status == 200 and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert api.get("/api/openapi.json", {"Authorization": "Bearer bad"})[0] == 401

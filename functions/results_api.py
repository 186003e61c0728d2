"""The analysts' read API over a test's results (precomputed with the statistics; item analysis from
the marking's sums when read):

GET /api/tests                               the test catalogue (paged)
GET /api/results/{testId}/aggregate          statistics in percent of available marks
GET /api/results/{testId}/histogram          ten 10-point bins
GET /api/results/{testId}/items              item analysis and data quality
GET /api/results/{testId}/students.csv       one row per student

Every answer carries an ETag; If-None-Match gets 304 (functions/http.py, serve_read).
"""
import azure.functions as func

from functions.auth import requires
from functions.http import serve_read
from shared.auth import Principal, Role
from shared.bootstrap import services
from shared.pipeline.analytics import catalogue, histogram_of, items_of, students_csv_of
from shared.pipeline.queries import statistics_of

bp = func.Blueprint()


@bp.function_name("results_aggregate")
@bp.route(route="results/{testId}/aggregate", methods=["GET"])
@requires(Role.READ)
def results_aggregate(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
    return serve_read(req, lambda: statistics_of(req.route_params["testId"], store=services().store))


@bp.function_name("tests_catalogue")
@bp.route(route="tests", methods=["GET"])
@requires(Role.READ)
def tests_catalogue(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
    return serve_read(req, lambda: catalogue(req.params.get("limit"), req.params.get("continuationToken"),
                                             reader=services().store))


@bp.function_name("results_histogram")
@bp.route(route="results/{testId}/histogram", methods=["GET"])
@requires(Role.READ)
def results_histogram(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
    return serve_read(req, lambda: histogram_of(req.route_params["testId"], reader=services().store))


@bp.function_name("results_items")
@bp.route(route="results/{testId}/items", methods=["GET"])
@requires(Role.READ)
def results_items(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
    return serve_read(req, lambda: items_of(req.route_params["testId"], reader=services().store))


@bp.function_name("results_students_csv")
@bp.route(route="results/{testId}/students.csv", methods=["GET"])
@requires(Role.READ)
def results_students_csv(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
    return serve_read(req, lambda: students_csv_of(req.route_params["testId"], reader=services().store))

"""The Markr function app (Azure Functions, Python v2 programming model).

This file only registers one Blueprint per feature; each lives in functions/.
"""
import azure.functions as func

from functions import (
    aggregator,
    dead_letter_sweeper,
    health,
    marker,
    notifier,
    openapi_api,
    ops_api,
    receiver,
    results_api,
    submissions_api,
    validator,
)
from shared.telemetry import configure_telemetry

configure_telemetry()  # Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

for feature in (receiver, validator, marker, notifier, aggregator, results_api, submissions_api, health,
                ops_api, dead_letter_sweeper, openapi_api):
    app.register_functions(feature.bp)

"""The Markr function app (Azure Functions, Python v2 programming model).

This file only registers one Blueprint per feature; each lives in functions/.
"""
import azure.functions as func

from functions import health

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

for blueprint in (health.bp,):
    app.register_functions(blueprint)

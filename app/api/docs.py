"""The API's own description: ``/api/v1/openapi.json`` and the ``/api/docs`` reference page
(Swagger UI, served from the installed ``openapi-ui-bundles`` package: no CDN)."""

from __future__ import annotations

from openapi_ui_bundles import swagger_ui
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from app.http import json_response, services

ASSETS = StaticFiles(directory=swagger_ui.static_path)

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Entity platform API reference</title>
  <link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="reference"></div>
  <script src="/api/docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/api/v1/openapi.json", dom_id: "#reference"});
  </script>
</body>
</html>
"""


async def openapi(request: Request) -> Response:
    """No sign-in needed: the document describes the API and holds no entity data."""
    return json_response(services(request).openapi.document())


async def page(request: Request) -> Response:
    return HTMLResponse(_PAGE)

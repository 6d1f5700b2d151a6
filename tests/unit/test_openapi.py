"""The OpenAPI document and the route table say the same thing: every route documented,
every documented operation routed to the handler it names, and a document that
schemathesis (the fuzz run's reader) accepts as OpenAPI 3.1."""

from __future__ import annotations

import re

import schemathesis

from serve_app.protocol import openapi
from serve_app.serving import http

EXAMPLES = {"name": "fraud-card-eu", "version": "3"}


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: EXAMPLES[m.group(1)], path)


def test_every_documented_operation_reaches_the_handler_it_names():
    for handler, method, path, *_ in openapi.OPERATIONS:
        found = http.match(method.upper(), concrete(path))
        assert found.handler == handler, (method, path)
        for field in ("name", "version"):
            if f"{{{field}}}" in path:
                assert getattr(found, field) == EXAMPLES[field], (path, field)


def test_every_route_is_documented_with_each_of_its_methods():
    documented = {(handler, method.upper()) for handler, method, *_ in openapi.OPERATIONS}
    routed = {(handler, method) for method, handler, _ in http.ROUTES}
    assert routed == documented


def test_each_pattern_has_a_documented_path_of_every_shape_it_matches():
    """A route with an optional `/versions/{v}` part needs both paths documented."""
    paths = {(method.upper(), path) for _, method, path, *_ in openapi.OPERATIONS}
    for method, handler, pattern in http.ROUTES:
        shapes = [p for m, p in paths if m == method and pattern.match(concrete(p))]
        assert shapes, (method, handler)
        if "(?:/versions/" in pattern.pattern:
            assert any("{version}" in p for p in shapes), (handler, shapes)
            assert any("{version}" not in p for p in shapes), (handler, shapes)


def test_the_document_is_openapi_3_1_with_an_error_body_on_every_error():
    document = openapi.document()
    assert document["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(document)
    assert sum(1 for _ in schema.get_all_operations()) == len(openapi.OPERATIONS)
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    (media,) = response["content"]
                    assert media == "application/json", (method, path, status)

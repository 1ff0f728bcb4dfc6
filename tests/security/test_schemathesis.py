"""schemathesis against a live gateway process, driven by the gateway's own /openapi.json.

Bounded (a fixed number of examples per operation, loopback only). Checked: no 5xx, status codes, content
types and bodies as the schema documents them, and every error is OpenAI's error JSON. The schema's model
name is narrowed to the configured model (and one unknown name) so generated requests reach the budget
stage and the backend instead of stopping at 404; image URLs are data: only (no network is touched).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests import procs

pytestmark = pytest.mark.integration


def _openai_error_json(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    if response.status_code >= 400:
        err = response.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}, response.text
        assert isinstance(err["message"], str) and err["message"]
    assert "x-request-id" in response.headers
    return None


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("st")
    with procs.fake_upstream(tmp) as up:
        config = (
            "gateway: {max_body_mb: 1}\n"
            f"pools:\n  - name: p\n    model: m\n    backend: {{url: '{up}'}}\n"
            "    limits: {fetch: {allow_http: false}}\n"
        )
        with procs.gateway(tmp, config) as (url, _):
            yield url


@pytest.fixture(scope="module")
def api(live: str) -> schemathesis.schemas.BaseSchema:
    doc = httpx.get(live + "/openapi.json", timeout=10).json()
    for name in ("ChatRequest", "CompletionRequest"):
        doc["components"]["schemas"][name]["allOf"][1]["properties"]["model"] = {"enum": ["m", "unknown-model"]}
    schema = schemathesis.openapi.from_dict(doc)
    schema.config.base_url = live
    return schema


CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    _openai_error_json,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_gateway_answers_every_generated_request_without_a_server_error(
    api: schemathesis.schemas.BaseSchema, mode: GenerationMode
) -> None:
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 9
    statuses: Counter[int] = Counter()
    for operation in operations:
        takes_input = len(operation.body) or len(operation.query) or len(operation.path_parameters)
        if mode is GenerationMode.NEGATIVE and not takes_input:
            continue  # nothing to get wrong

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def run(case: schemathesis.Case) -> None:
            statuses[case.call_and_validate(checks=CHECKS, timeout=30).status_code] += 1

        run()
    # the generated requests reached both the backend and the validation
    assert statuses[200] > 0 and statuses[400] > 0, statuses

"""A short schemathesis run against the live server's own OpenAPI spec: valid and invalid requests
alike must never get a 5xx, and answers must match the spec. The long run is documented in
docs/serving.md (`schemathesis run ...` against `layerskip serve`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from layerskip.serve.app import create_app
from layerskip.serve.background import serving
from layerskip.serve.config import ServerConfig


@pytest.fixture(scope="module")
def spec(tiny) -> Iterator[schemathesis.BaseSchema]:
    # The default body limit: a 413 for a large invalid body is not among the statuses
    # schemathesis counts as a rejection, and 8 KiB bodies were generated often enough to flake.
    cfg = ServerConfig(served_model_name="tiny", max_tokens=16)
    with serving(create_app(tiny, cfg)) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
def test_no_server_errors_and_answers_match_the_spec(spec, mode):
    """Schema-valid requests may still exceed a limit of the model (exit layer, context): those are
    400s by design, so "every valid request is accepted" is not checked."""
    for result in spec.get_all_operations():
        operation = result.ok()
        if mode == schemathesis.GenerationMode.NEGATIVE and not operation.body:
            continue  # nothing to make invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(excluded_checks=[positive_data_acceptance], timeout=30)

        check()

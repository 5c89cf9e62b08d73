"""Property-based run of the admin API against its own OpenAPI document (schemathesis):
whatever the generated input, no 5xx, and every response matches its declared schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.integration.harness import ADMIN_TOKEN, LoopThread, Stack, running_stack


@pytest.fixture(scope="module")
def admin_stack() -> Iterator[Stack]:
    loop = LoopThread()
    with running_stack(loop) as stack:
        yield stack
    loop.close()


def test_admin_api_never_fails_and_keeps_its_schema(admin_stack: Stack) -> None:
    api = schemathesis.openapi.from_url(f"{admin_stack.admin_url}/admin/schema/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 20

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def exercise(case: Any) -> None:
            case.call_and_validate(
                base_url=admin_stack.admin_url,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
            )

        exercise()

"""The API against its own OpenAPI document: generated requests, with a token that may call
each route, never get a 500 and always get an answer that matches the documented schema."""

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import (
    ignored_auth,
    positive_data_acceptance,
    unsupported_method,
)

from app.core.config import Settings
from app.main import create_app
from tests.support import SettableClock

EXAMPLES_PER_OPERATION = 8


def test_every_operation_answers_as_documented(
    settings: Settings, clock: SettableClock, auth: dict[str, dict[str, str]]
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, clock=clock))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:
        check_operation(operation, auth)


def check_operation(operation: Any, auth: dict[str, dict[str, str]]) -> None:
    """Up to EXAMPLES_PER_OPERATION generated requests against one operation."""
    # Collectors send reports; the admin token reaches every other route.
    headers = auth["collector"] if operation.path.startswith("/v1/reports") else auth["admin"]

    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def call(case: Any) -> None:
        case.call_and_validate(
            headers=headers,
            # Schema-valid data may still break a rule the schema cannot state (an
            # interval over an hour, a month not over yet): a 4xx is a fine answer.
            excluded_checks=[positive_data_acceptance, ignored_auth, unsupported_method],
        )

    call()

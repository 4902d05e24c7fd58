"""One sentence for a failure an operator can fix that is not one of our own ``CdcError``s.

Library errors (a missing privilege on the source, MongoDB refusing the credentials) and an
unreachable MongoDB become a sentence that says what happened and what to do; the CLI prints
it, and Dagster runs can use it too.

Invariant: a sentence names servers by their redacted form and scrubs the secret variables from
any server text it quotes (``settings.scrub_secrets``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from pymongo.errors import OperationFailure

from cdc_pipeline.core.errors import SinkUnavailableError, SourceSettingError
from cdc_pipeline.core.mysql.grants import privilege_error_code
from cdc_pipeline.core.settings import scrub_secrets

_MONGO_AUTH_FAILED = 18
_MONGO_UNAUTHORIZED = 13


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from or while handling (also under ``from None``)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def explain_failure(
    error: BaseException,
    mongo_where: str,
    retry_hint: str = "",
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The sentence for ``error``, or None when it is not recognised.

    Args:
        mongo_where: the sink as operators may see it (``MongoSettings.redacted()``).
        retry_hint: appended to the MongoDB-unreachable sentence (say, the command to rerun).
        environ: where the secrets to scrub are (default: the process environment).
    """
    if isinstance(error, SinkUnavailableError):
        noun = "try" if error.attempts == 1 else "tries"
        return (
            f"MongoDB at {mongo_where} did not answer ({error.error_class},"
            f" {error.attempts} {noun} in {error.elapsed_seconds:.1f} s); start it or correct"
            f" the host and port in CDC_MONGO_URI{retry_hint}."
        )
    if isinstance(error, SourceSettingError):
        return None  # already diagnosed, with its own fix
    for cause in _chain(error):
        code = privilege_error_code(cause)
        if code is not None:
            said = scrub_secrets(
                str(cause.args[1]) if len(cause.args) > 1 else "access denied", environ
            )
            return (
                f"the source refused a query for lack of a privilege (MySQL error {code}:"
                f" {said.rstrip('.')}); grant it to the user of CDC_MYSQL_URL ('cdc-pipeline"
                " doctor' prints the GRANT statements it needs)."
            )
        if isinstance(cause, OperationFailure) and cause.code in (
            _MONGO_UNAUTHORIZED,
            _MONGO_AUTH_FAILED,
        ):
            what = (
                "refused the credentials"
                if cause.code == _MONGO_AUTH_FAILED
                else "denied an operation"
            )
            return (
                f"MongoDB at {mongo_where} {what} (code {cause.code}); correct the user and"
                " password in CDC_MONGO_URI or grant that user readWrite on CDC_MONGO_DB."
            )
    return None

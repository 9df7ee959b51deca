"""The one place where harness exceptions become pytest outcomes, for every test alike.

A finding about the image is an ``AssertionError`` (a failure, left as it is); a check that
does not apply is a skip; a check that could not run because of an earlier finding is a
skip that says "not run: ..."; an image that could not be evaluated at all is an error of
one line, ``harness: ...``, with no traceback to read.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from .errors import CheckSkipped, NotRun, SetupError

# How a test ended in the harness's terms, when pytest's own words are not enough.
KIND = pytest.StashKey[str]()
NOT_EVALUATED = "not-evaluated"
NOT_RUN = "not-run"


def translate(item: pytest.Item, exc: BaseException) -> BaseException:
    if isinstance(exc, NotRun):
        item.stash[KIND] = NOT_RUN
        return pytest.skip.Exception(str(exc))
    if isinstance(exc, CheckSkipped):
        return pytest.skip.Exception(str(exc))
    if isinstance(exc, SetupError):
        item.stash[KIND] = NOT_EVALUATED
        return pytest.fail.Exception(f"harness: {exc}", pytrace=False)
    return exc


class OutcomeTranslator:
    """Wraps the setup and call of every test: the harness's fixtures raise the same exceptions."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        return (yield from _translating(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        return (yield from _translating(item))


def _translating(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    except Exception as exc:
        translated = translate(item, exc)
        if translated is exc:
            raise
        raise translated from None

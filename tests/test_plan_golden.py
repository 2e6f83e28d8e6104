"""The planner and the config counter against golden outputs recorded before the
issue 12 refactor (see tests/plan_golden.py for how and from which commit)."""

from __future__ import annotations

import json

import plan_golden
import pytest

GOLDEN = json.loads(plan_golden.GOLDEN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def current():
    return plan_golden.compute()


@pytest.mark.parametrize("section", ["plans", "configs"])
def test_same_cases(current, section):
    assert sorted(current[section]) == sorted(GOLDEN[section])


@pytest.mark.parametrize("key", sorted(GOLDEN["plans"]))
def test_plan_matches_golden(current, key):
    assert current["plans"][key] == GOLDEN["plans"][key]


@pytest.mark.parametrize("key", sorted(GOLDEN["configs"]))
def test_config_matches_golden(current, key):
    assert current["configs"][key] == GOLDEN["configs"][key]


def test_golden_file_is_written_by_the_generator(current):
    assert plan_golden.dump(current) == plan_golden.GOLDEN.read_text(encoding="utf-8")

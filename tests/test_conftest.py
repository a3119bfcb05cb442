"""The test suite's own scheduling (tests/conftest.py): the slowest tests are collected first."""

from __future__ import annotations

import pytest

from conftest import SLOWEST_FIRST, slowest_first_rank


def test_slowest_first_rank_orders_by_the_list_and_puts_the_rest_last():
    assert slowest_first_rank("tests/test_paper_profile.py::test_x[02_training]") == 0
    assert slowest_first_rank("tests/test_regression.py::test_y[04_cifar10_features]") == 4
    assert slowest_first_rank("tests/test_paper_profile.py::test_x[00_data]") == len(SLOWEST_FIRST)
    assert slowest_first_rank("tests/test_gate.py::test_z") == len(SLOWEST_FIRST)
    assert slowest_first_rank("tests/test_paper_profile.py::test_x[2]") == len(SLOWEST_FIRST)  # no glob classes


def test_every_slowest_first_pattern_names_a_collected_test_and_they_come_first(request):
    ids = [item.nodeid.rsplit("/", 1)[-1] for item in request.session.items]
    if not any(i.startswith("test_paper_profile.py::") for i in ids):
        pytest.skip("only part of the suite was collected")
    ranks = [slowest_first_rank(i) for i in ids]
    for k, entry in enumerate(SLOWEST_FIRST):  # a renamed test would silently fall back to file order
        assert ranks.count(k) == 1, f"{ranks.count(k)} collected tests match {entry}: update SLOWEST_FIRST"
    head = ids[: len(SLOWEST_FIRST)]
    assert [slowest_first_rank(i) for i in head] == list(range(len(SLOWEST_FIRST))), head

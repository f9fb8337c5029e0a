"""OS versions as comparable tuples (protocol/versions.py): the one parser the blueprints' OS targets, DDM's
capability rule and the enforcement declarations share."""

from __future__ import annotations

import pytest

from mdmserver.protocol.versions import version_tuple


@pytest.mark.parametrize(("text", "expected"), [
    ("17.5.1", (17, 5, 1)),
    ("17", (17,)),
    ("17.0", (17,)),
    ("17.0.0", (17,)),
    ("14.6", (14, 6)),
    (" 16.7.2 ", (16, 7, 2)),
    ("10.15.7.1", (10, 15, 7, 1)),
])
def test_versions_parse(text, expected):
    assert version_tuple(text) == expected


@pytest.mark.parametrize("text", [None, "", "latest", "17.", ".5", "17..1", "17.5a", "1.2.3.4.5", "-17",
                                  "99999.1", "17.1234567", "١٧.٥"])
def test_anything_else_is_unknown(text):
    assert version_tuple(text) is None


def test_versions_compare_as_versions():
    assert version_tuple("17.10") > version_tuple("17.9")
    assert version_tuple("17.0") == version_tuple("17")
    assert version_tuple("16.7.10") < version_tuple("17")

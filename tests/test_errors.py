"""The host's one-line form of a third-party exception: what every converter and loader error shows."""

from __future__ import annotations

from edgekit.errors import one_line


def test_multi_line_coloured_messages_become_one_plain_line():
    exc = RuntimeError("\x1b[31mfailed\x1b[0m to convert\n\n  node Conv_3:\tbad   shape\n")
    assert one_line(exc) == "failed to convert node Conv_3: bad shape"


def test_long_messages_are_cut_and_say_so():
    text = one_line(ValueError("x" * 1000), limit=50)
    assert text == "x" * 50 + "..."
    assert one_line(ValueError("y" * 50), limit=50) == "y" * 50


def test_the_type_is_named_when_asked():
    assert one_line(KeyError("input"), with_type=True) == "KeyError: 'input'"
    assert one_line(ValueError(""), with_type=True) == "ValueError: "

"""The anchored unified diff: applying it to a gives b, and simple cases read as difflib's."""

from __future__ import annotations

import difflib
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from runarchive.core.textdiff import unified_lines

HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@\n")


def apply(a: list[str], diff: list[str]) -> list[str]:
    """Apply a unified diff to ``a``, checking every context and removed line against it."""
    out: list[str] = []
    pos = 0
    body = diff[2:]
    k = 0
    while k < len(body):
        match = HUNK.fullmatch(body[k])
        assert match, body[k]
        start = int(match[1]) - (0 if match[2] == "0" else 1)
        assert start >= pos
        out.extend(a[pos:start])
        pos = start
        k += 1
        while k < len(body) and not body[k].startswith("@@"):
            sign, line = body[k][0], body[k][1:]
            if sign in " -":
                assert a[pos] == line
                pos += 1
            if sign in " +":
                out.append(line)
            k += 1
    return out + a[pos:]


lines = st.lists(st.sampled_from(["a\n", "b\n", "c\n", "d\n", "e\n", "f\n", "g\n"]), max_size=40)


@settings(max_examples=400, deadline=None)
@given(a=lines, b=lines)
def test_applying_the_diff_to_a_gives_b(a: list[str], b: list[str]) -> None:
    diff = list(unified_lines(a, b, "a/x", "b/x"))
    if a == b:
        assert diff == []
    else:
        assert diff[:2] == ["--- a/x\n", "+++ b/x\n"]
        assert apply(a, diff) == b


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 300),
    edits=st.lists(st.tuples(st.integers(0, 299), st.sampled_from(["del", "ins", "sub"]))),
)
def test_edits_to_a_file_of_distinct_lines_read_as_difflibs_diff(
    size: int, edits: list[tuple[int, str]]
) -> None:
    a = [f"line {i}\n" for i in range(size)]
    b = list(a)
    for at, kind in sorted(set(edits), reverse=True):
        if at >= len(b):
            continue
        if kind == "del":
            del b[at]
        elif kind == "ins":
            b.insert(at, f"new {at}\n")
        else:
            b[at] = f"changed {at}\n"
    ours = list(unified_lines(a, b, "a/x", "b/x"))
    assert apply(a, ours) == b
    assert ours == list(difflib.unified_diff(a, b, "a/x", "b/x"))

"""How the agent splits a command line: as ``shlex.split`` does, whichever path it takes."""

from __future__ import annotations

import shlex

import pytest

from hpcbatch.execution.spawn import split_command_line

LINES = [
    "/bin/true", "  python  run.py 3 ", "a\tb\nc\rd", "echo $HOME; ls | wc", "x=1 y=2 #no comment",
    "echo 'two words'", 'echo "a b" c', "echo a\\ b", "echo it\\'s", "a\x0bb", "a\x0cb",
    "a\x1cb\x1fc", "a\x85b", "a\xa0b", "naïve words", "", "   ",
]


@pytest.mark.parametrize("line", LINES)
def test_the_words_are_shlex_words(line: str) -> None:
    assert split_command_line(line) == shlex.split(line)


@pytest.mark.parametrize("line", ["echo 'open", 'echo "open', "trailing\\"])
def test_a_line_shlex_cannot_split_is_refused(line: str) -> None:
    with pytest.raises(ValueError):
        shlex.split(line)
    with pytest.raises(ValueError):
        split_command_line(line)

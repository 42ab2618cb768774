"""docs/operations.md says what is true: every setting is in it, every setting it names exists,
every ``patientkontrakt`` command in its shell blocks parses with the command's own parser, and
the files it points at are there."""

from __future__ import annotations

import contextlib
import io
import re
import shlex

import pytest

from patientkontrakt import cli
from patientkontrakt.config import PROJECT_ROOT
from tests.deploy import SERVER_VARIABLES, SETTINGS

DOC = (PROJECT_ROOT / "docs" / "operations.md").read_text()
TEST_VARIABLES = {"PK_TEST_DATABASE_URL"}


def shell_lines() -> list[str]:
    """The command lines of the doc's ``sh`` blocks, continuation lines joined, comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"^ *```sh\n(.*?)^ *```", DOC, re.S | re.M):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def commands(program: str) -> list[list[str]]:
    """The arguments of every call of ``program`` (or a path ending in it) in the shell blocks,
    also inside ``$(...)``, without leading variable assignments, comments and redirections."""
    found = []
    for line in shell_lines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        segment: list[str] = []
        for word in [*lexer, ";"]:
            if word and set(word) <= set("();|&"):  # a segment ends: ; && || | ( ) and $( … )
                while segment and re.match(r"^\w+=", segment[0]):
                    segment.pop(0)
                if segment and (segment[0] == program or segment[0].endswith("/" + program)):
                    arguments = segment[1:]
                    redirections = [i for i, w in enumerate(arguments) if set(w) <= set("<>")]
                    found.append(arguments[:redirections[0]] if redirections else arguments)
                segment = []
            else:
                segment.append(word)
    return found


@pytest.mark.parametrize("variable", sorted(SETTINGS))
def test_every_setting_is_documented(variable: str) -> None:
    assert re.search(rf"`{variable}`", DOC), f"{variable} is not in docs/operations.md (Configuration)"


def test_every_variable_the_doc_names_exists() -> None:
    named = set(re.findall(r"\bPK_[A-Z0-9_]*[A-Z0-9]\b", DOC))
    assert named - SETTINGS - SERVER_VARIABLES - TEST_VARIABLES == set()
    assert SERVER_VARIABLES <= named


def test_every_patientkontrakt_command_in_the_doc_parses() -> None:
    found = commands("patientkontrakt")
    assert len(found) >= 10
    assert {args[0] for args in found} >= {"keys", "audit", "clients", "token"}
    parser = cli.build_parser()
    for args in found:
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            try:
                parser.parse_args(args)
            except SystemExit as exit:
                assert exit.code == 0, f"patientkontrakt {shlex.join(args)}: {errors.getvalue()}"


def test_the_parser_check_can_fail() -> None:
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as exit:
        cli.build_parser().parse_args(["audit", "verify", "--checkpoints", "file"])
    assert exit.value.code == 2


def test_the_entrypoint_modes_and_files_the_doc_names_exist() -> None:
    modes = [args[0] for args in commands("entrypoint.sh")]
    assert modes and set(modes) <= {"api", "worker", "migrate"}
    for path in set(re.findall(r"(?<![\w/])(deploy/[\w./-]*[\w/])", DOC)):
        if not path.startswith("deploy/keys"):  # made by the reader, never committed
            assert (PROJECT_ROOT / path).exists(), path
    for path in set(re.findall(r"\b(tests/[\w/]+\.py)", DOC)):
        assert (PROJECT_ROOT / path).exists(), path

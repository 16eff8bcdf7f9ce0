"""`make env` (``batchscore compose-env``): fresh secrets each time, mode 0600, never a silent overwrite."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from batchscore.cli.compose_env import FERNET_KEY, IMAGE_UID, SECRETS, render, write_env
from batchscore.cli.main import main
from tests.unit.deploy.compose_file import ENV_EXAMPLE, parse_env_file


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 000: a file created without an explicit mode would be world-readable."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_two_runs_give_different_secrets_and_keep_every_other_setting(tmp_path: Path, open_umask: None) -> None:
    first, second = tmp_path / "first.env", tmp_path / "second.env"
    assert write_env(first, ENV_EXAMPLE) == list(SECRETS)
    write_env(second, ENV_EXAMPLE)
    one, two = parse_env_file(first.read_text()), parse_env_file(second.read_text())

    assert [name for name in SECRETS if one[name] == two[name]] == []
    assert len({one[name] for name in SECRETS}) == len(SECRETS), "no two secrets of one file are equal"
    example = parse_env_file(ENV_EXAMPLE.read_text())
    others = set(example) - set(SECRETS) - {"AIRFLOW_UID"}
    assert {name: one[name] for name in others} == {name: example[name] for name in others}
    assert (mode(first), mode(second)) == (0o600, 0o600)


def test_secrets_are_strong_url_safe_and_the_fernet_key_works(tmp_path: Path) -> None:
    env = parse_env_file(render(ENV_EXAMPLE.read_text(), uid=1000))
    for name in set(SECRETS) - {FERNET_KEY}:
        assert len(env[name]) >= 32, f"{name}: at least 16 random bytes"
        assert env[name].isalnum(), f"{name} goes into connection URIs and command lines as it is"
    assert len(bytes.fromhex(env["AIRFLOW_JWT_SECRET"])) == 64
    fernet = Fernet(env[FERNET_KEY].encode())
    assert fernet.decrypt(fernet.encrypt(b"connection password")) == b"connection password"
    assert env["AIRFLOW_UID"] == "1000"
    assert parse_env_file(render(ENV_EXAMPLE.read_text(), uid=0))["AIRFLOW_UID"] == str(IMAGE_UID)


def test_an_existing_env_is_never_replaced_unless_asked(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / ".env"
    path.write_text("AIRFLOW_DB_PASSWORD=the-one-the-volume-has\n")
    path.chmod(0o644)
    with pytest.raises(FileExistsError, match=rf"{path} exists: keep it, or replace it with --force"):
        write_env(path, ENV_EXAMPLE)
    assert path.read_text() == "AIRFLOW_DB_PASSWORD=the-one-the-volume-has\n"

    write_env(path, ENV_EXAMPLE, force=True)
    assert parse_env_file(path.read_text())["AIRFLOW_DB_PASSWORD"] != "the-one-the-volume-has"
    assert mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"], "no temporary file left behind"


def test_a_template_without_a_secret_is_refused_by_name() -> None:
    template = "\n".join(line for line in ENV_EXAMPLE.read_text().splitlines() if not line.startswith("REDIS_PASSWORD"))
    with pytest.raises(ValueError, match=r"\.env\.example: no line for REDIS_PASSWORD; add `NAME=` for each"):
        render(template, uid=1000)


def test_the_command_writes_once_then_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / ".env"
    assert main(["compose-env", "--path", str(path)]) == 0
    written = path.read_text()
    assert f"wrote {path} (mode 0600)" in capsys.readouterr().out
    assert main(["compose-env", "--path", str(path)]) == 1
    assert f"error: {path} exists" in capsys.readouterr().err
    assert path.read_text() == written
    assert main(["compose-env", "--path", str(path), "--force"]) == 0
    assert path.read_text() != written

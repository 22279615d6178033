"""Secret references: the lookup convention, errors, and that values never leak."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from aof_index.errors import AofIndexError, SecretNotFoundError
from aof_index.spec import (
    GitCredentialsSecretRef,
    SecretRef,
    load_knowledge_base,
    load_memory,
    resolve_secret,
    secret_env_var,
)
from aof_index.spec.secrets import DEFAULT_SECRETS_DIR, secrets_dir

VALUE = "sk-test-0123456789abcdef"
MANIFESTS = Path(__file__).parent / "manifests"


@pytest.fixture
def no_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty secrets directory and no AOF_SECRET_* variables."""
    for name in list(os.environ):
        if name.startswith("AOF_SECRET_"):
            monkeypatch.delenv(name)
    directory = tmp_path / "secrets"
    directory.mkdir()
    monkeypatch.setenv("AOF_INDEX_SECRETS_DIR", str(directory))
    return directory


def write_secret(directory: Path, name: str, key: str, content: str) -> None:
    (directory / name).mkdir(exist_ok=True)
    (directory / name / key).write_text(content)


@pytest.mark.parametrize(
    ("name", "key", "variable"),
    [
        ("openai-creds", "api-key", "AOF_SECRET_OPENAI_CREDS_API_KEY"),
        ("pg.main", "password", "AOF_SECRET_PG_MAIN_PASSWORD"),
        ("s3-creds", "secret_key", "AOF_SECRET_S3_CREDS_SECRET_KEY"),
        ("git-ssh", "id_ed25519", "AOF_SECRET_GIT_SSH_ID_ED25519"),
    ],
)
def test_env_var_name(name: str, key: str, variable: str) -> None:
    assert secret_env_var(name, key) == variable
    assert SecretRef(name=name, key=key).env_var == variable


def test_resolves_from_environment(no_secrets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOF_SECRET_OPENAI_CREDS_API_KEY", VALUE)
    secret = SecretRef(name="openai-creds", key="api-key").resolve()
    assert isinstance(secret, SecretStr)
    assert secret.get_secret_value() == VALUE


def test_resolves_from_secrets_directory(no_secrets: Path) -> None:
    write_secret(no_secrets, "openai-creds", "api-key", VALUE + "\n")
    secret = SecretRef(name="openai-creds", key="api-key").resolve()
    assert secret.get_secret_value() == VALUE  # one trailing newline stripped


def test_only_one_trailing_newline_is_stripped(no_secrets: Path) -> None:
    write_secret(no_secrets, "cert", "pem", "line1\nline2\n\n")
    write_secret(no_secrets, "win", "token", "abc\r\n")
    assert resolve_secret("cert", "pem").get_secret_value() == "line1\nline2\n"
    assert resolve_secret("win", "token").get_secret_value() == "abc"


def test_environment_wins_over_directory(no_secrets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_secret(no_secrets, "db", "password", "from-file")
    monkeypatch.setenv("AOF_SECRET_DB_PASSWORD", "from-env")
    assert resolve_secret("db", "password").get_secret_value() == "from-env"


def test_explicit_environ_and_directory(tmp_path: Path) -> None:
    write_secret(tmp_path, "db", "password", "file-value")
    ref = SecretRef(name="db", key="password")
    assert ref.resolve(environ={"AOF_SECRET_DB_PASSWORD": "x"}).get_secret_value() == "x"
    assert ref.resolve(environ={}, directory=tmp_path).get_secret_value() == "file-value"


def test_default_secrets_directory() -> None:
    assert secrets_dir({}) == DEFAULT_SECRETS_DIR == Path("/var/run/secrets/aof")
    assert secrets_dir({"AOF_INDEX_SECRETS_DIR": "/mnt/s"}) == Path("/mnt/s")


def test_missing_secret_names_what_was_tried(no_secrets: Path) -> None:
    ref = SecretRef(name="openai-creds", key="api-key")
    with pytest.raises(SecretNotFoundError) as info:
        ref.resolve()
    message = str(info.value)
    assert isinstance(info.value, AofIndexError)
    assert "openai-creds/api-key" in message
    assert "AOF_SECRET_OPENAI_CREDS_API_KEY" in message
    assert str(no_secrets / "openai-creds" / "api-key") in message
    assert "does not exist" in message
    assert "Set AOF_SECRET_OPENAI_CREDS_API_KEY, or mount the Secret" in message


def test_git_credentials_resolve_both_keys(no_secrets: Path) -> None:
    write_secret(no_secrets, "git-basic-auth", "username", "ci-bot\n")
    write_secret(no_secrets, "git-basic-auth", "password", VALUE)
    ref = GitCredentialsSecretRef.model_validate(
        {"name": "git-basic-auth", "usernameKey": "username", "passwordKey": "password"}
    )
    username, password = ref.resolve()
    assert username.get_secret_value() == "ci-bot"
    assert password.get_secret_value() == VALUE
    assert VALUE not in repr(ref.resolve())


@pytest.mark.parametrize("bad", ["../etc", "..", "a/b", "", "name with space"])
def test_names_cannot_escape_the_directory(bad: str) -> None:
    with pytest.raises(ValidationError, match="Secret names and keys may hold only"):
        SecretRef(name=bad, key="k")
    with pytest.raises(ValidationError):
        SecretRef(name="n", key=bad)


def test_secret_ref_requires_name_and_key() -> None:
    with pytest.raises(ValidationError):
        SecretRef.model_validate({"name": "only-name"})


def test_resolved_secret_never_shows(
    no_secrets: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AOF_SECRET_OPENAI_CREDS_API_KEY", VALUE)
    write_secret(no_secrets, "pg", "password", VALUE)
    caplog.set_level(logging.DEBUG)
    memory = load_memory(MANIFESTS / "memory-full.yaml")
    semantic = memory.spec.semantic
    assert semantic is not None and semantic.embedding is not None
    ref = semantic.embedding.api_key_secret_ref
    assert ref is not None
    secret = ref.resolve()
    from_file = resolve_secret("pg", "password")
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        repr(from_file),
        repr(ref),
        str(ref),
        repr(memory),
        str(memory.model_dump()),
        memory.model_dump_json(),
        caplog.text,
    ]
    for text in shown:
        assert VALUE not in text
    assert secret.get_secret_value() == VALUE
    assert "openai-creds" in caplog.text  # the reference is logged, the value is not


def test_manifest_webhook_secret_never_shows() -> None:
    kb = load_knowledge_base(MANIFESTS / "knowledgebase-full.yaml")
    literal = "wh-s3cr3t-value"
    assert literal not in repr(kb)
    assert literal not in str(kb)
    assert literal not in kb.model_dump_json()
    assert literal not in str(kb.model_dump(mode="json"))
    assert '"secret":"**********"' in kb.model_dump_json()

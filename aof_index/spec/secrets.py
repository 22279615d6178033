"""Secret references (``*SecretRef``) and their late resolution.

A manifest never holds a credential: it names a Kubernetes Secret and a key in it::

    apiKeySecretRef:
      name: openai-creds
      key: api-key

The reference is resolved only when a component needs the value, by
:meth:`SecretRef.resolve`, which returns a :class:`pydantic.SecretStr`. Two places are
looked at, and the first one that has the secret wins:

1. the environment variable ``AOF_SECRET_<NAME>_<KEY>``, where name and key are upper-cased
   and every character that is not a letter or digit becomes ``_``: name ``openai-creds``,
   key ``api-key`` gives ``AOF_SECRET_OPENAI_CREDS_API_KEY``. A variable that is set wins
   even when it is empty;
2. the file ``$AOF_INDEX_SECRETS_DIR/<name>/<key>`` (default directory
   ``/var/run/secrets/aof``), the layout a Kubernetes Secret volume has when each Secret is
   mounted at ``<dir>/<name>``. One trailing newline is removed from the file's content.

When neither has it, :class:`~aof_index.errors.SecretNotFoundError` names the reference, the
variable and the file that were tried. Different name/key pairs can map to the same variable
(``a-b``/``c`` and ``a``/``b-c``); give Secrets distinct names, or use the secrets directory,
which keeps them apart.

Resolved values are never stored on a model, logged or serialised: ``SecretStr`` shows
``**********`` in ``repr``, ``str`` and JSON dumps. The references themselves (name and key)
are not secret and appear in messages. See ``docs/secrets.md``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, NamedTuple

from pydantic import AfterValidator, Field, SecretStr
from pydantic_core import PydanticCustomError

from aof_index.errors import SecretNotFoundError
from aof_index.spec.base import SpecModel

__all__ = [
    "DEFAULT_SECRETS_DIR",
    "ENV_PREFIX",
    "SECRETS_DIR_ENV",
    "GitCredentials",
    "GitCredentialsSecretRef",
    "SecretRef",
    "resolve_secret",
    "secret_env_var",
    "secret_file_path",
    "secrets_dir",
]

logger = logging.getLogger(__name__)

ENV_PREFIX = "AOF_SECRET_"
"""Prefix of the environment variables that hold secrets."""
SECRETS_DIR_ENV = "AOF_INDEX_SECRETS_DIR"
"""Environment variable naming the mounted secrets directory."""
DEFAULT_SECRETS_DIR = Path("/var/run/secrets/aof")
"""Secrets directory used when ``AOF_INDEX_SECRETS_DIR`` is not set."""

_PART_RE = re.compile(r"[-._A-Za-z0-9]+")
_NON_ALNUM_RE = re.compile(r"[^A-Za-z0-9]")


def _check_part(value: str) -> str:
    # Names and keys become a path below the secrets directory: keep them to the characters
    # Kubernetes allows in Secret names and keys, so nothing can point outside it.
    if not _PART_RE.fullmatch(value) or value in {".", ".."}:
        raise PydanticCustomError(
            "secret_ref",
            "Secret names and keys may hold only letters, digits, '-', '_' and '.' "
            "(e.g. openai-creds, api-key)",
        )
    return value


SecretPart = Annotated[str, AfterValidator(_check_part)]


def secret_env_var(name: str, key: str) -> str:
    """The environment variable checked for Secret ``name``, key ``key``."""
    return ENV_PREFIX + _NON_ALNUM_RE.sub("_", f"{name}_{key}").upper()


def secrets_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The mounted secrets directory: ``$AOF_INDEX_SECRETS_DIR`` or ``/var/run/secrets/aof``."""
    env = os.environ if environ is None else environ
    configured = env.get(SECRETS_DIR_ENV)
    return Path(configured) if configured else DEFAULT_SECRETS_DIR


def secret_file_path(
    name: str, key: str, *, directory: Path | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The file checked for Secret ``name``, key ``key``: ``<secrets dir>/<name>/<key>``."""
    return (directory if directory is not None else secrets_dir(environ)) / name / key


def _strip_one_newline(text: str) -> str:
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def resolve_secret(
    name: str,
    key: str,
    *,
    environ: Mapping[str, str] | None = None,
    directory: Path | None = None,
) -> SecretStr:
    """Resolve Secret ``name``/``key`` from the environment, then the secrets directory.

    ``environ`` (default ``os.environ``) and ``directory`` (default :func:`secrets_dir`)
    exist for tests and embedding. Raises :class:`SecretNotFoundError` when neither has it.
    """
    _check_part(name)
    _check_part(key)
    env = os.environ if environ is None else environ
    variable = secret_env_var(name, key)
    if variable in env:
        logger.debug("secret %s/%s resolved from environment variable %s", name, key, variable)
        return SecretStr(env[variable])
    path = secret_file_path(name, key, directory=directory, environ=env)
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problem = "does not exist"
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or type(exc).__name__})"
    else:
        logger.debug("secret %s/%s resolved from file %s", name, key, path)
        return SecretStr(_strip_one_newline(content))
    raise SecretNotFoundError(
        f"secret {name}/{key} (Secret {name!r}, key {key!r}) not found: environment variable "
        f"{variable} is not set and file {path} {problem}. Set {variable}, or mount the "
        f"Secret so that {path} holds the value (the directory is ${SECRETS_DIR_ENV}, "
        f"default {DEFAULT_SECRETS_DIR})."
    )


class SecretRef(SpecModel):
    """A reference to one key of a Kubernetes Secret (every ``*SecretRef`` field)."""

    name: SecretPart = Field(description="Name of the Secret.")
    key: SecretPart = Field(description="Key in the Secret.")

    @property
    def env_var(self) -> str:
        """The environment variable this reference resolves from first."""
        return secret_env_var(self.name, self.key)

    def resolve(
        self, *, environ: Mapping[str, str] | None = None, directory: Path | None = None
    ) -> SecretStr:
        """The secret's value, looked up now (see the module docstring for where)."""
        return resolve_secret(self.name, self.key, environ=environ, directory=directory)

    def __str__(self) -> str:
        return f"{self.name}/{self.key}"


class GitCredentials(NamedTuple):
    """A resolved username and password (or token) for git over HTTPS."""

    username: SecretStr
    password: SecretStr


class GitCredentialsSecretRef(SpecModel):
    """A Secret holding a git username and password under two keys
    (``spec.sources[].git.credentialsSecretRef``)."""

    name: SecretPart
    username_key: SecretPart
    password_key: SecretPart

    @property
    def username_ref(self) -> SecretRef:
        """The username as a :class:`SecretRef`."""
        return SecretRef(name=self.name, key=self.username_key)

    @property
    def password_ref(self) -> SecretRef:
        """The password as a :class:`SecretRef`."""
        return SecretRef(name=self.name, key=self.password_key)

    def resolve(
        self, *, environ: Mapping[str, str] | None = None, directory: Path | None = None
    ) -> GitCredentials:
        """Both values, looked up now."""
        return GitCredentials(
            self.username_ref.resolve(environ=environ, directory=directory),
            self.password_ref.resolve(environ=environ, directory=directory),
        )

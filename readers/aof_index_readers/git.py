"""Read the files of any git repository at a branch, tag or commit, with the ``git`` CLI.

The repository is cloned once (a bare clone under ``cache_dir``, keyed by a hash of the URL)
and fetched on every later listing, so only new commits travel. Nothing is checked out:
listings come from ``git ls-tree`` and content from the object store through one long-lived
``git cat-file --batch`` process, so a symlink or a ``..`` path in the repository can never
make the reader touch a file outside it (symlinks are skipped with a reason).

- A document's id is ``stable_id("git", <url without credentials>, <path>)``, the same for
  every clone; its version is the file's blob sha, which changes exactly when the content
  does. ``last_modified`` and ``author`` come from the last commit touching each file,
  found in one ``git log`` pass that stops once every listed file is seen.
- :meth:`GitReader.changes_since` diffs two commits (``git diff --name-status``) into a
  :class:`ChangeSet` (a rename is a delete plus an add); :attr:`GitReader.commit` is the
  commit the last listing or diff resolved, for a sync to store.
- Text extraction and the skip rules (binary, unsupported type, too large, empty) are those
  of the local files reader (:mod:`aof_index_readers.text`).

Credentials never reach the URL, the command line, the clone's config or an error message:
an SSH key is written to a ``0600`` temporary file used through ``GIT_SSH_COMMAND`` (with
``IdentitiesOnly=yes``) and deleted after each fetch; an HTTPS username and password reach
git through a ``GIT_ASKPASS`` script that reads them from the child process's environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import weakref
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Unpack
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from llama_index.core.schema import Document

from aof_index_readers.base import (
    DocumentRef,
    ReaderOptions,
    SourceReader,
    iso_time,
    stable_id,
)
from aof_index_readers.errors import (
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourcePermissionError,
    SourceUnavailableError,
)
from aof_index_readers.local_files import excluded
from aof_index_readers.paths import PathFilter
from aof_index_readers.text import file_type, unsupported_reason

__all__ = ["ChangeSet", "GitReader"]

DEFAULT_TIMEOUT = 600.0
"""Seconds one fetch may take before the source counts as unavailable."""

_SYMLINK_MODE = "120000"
_USERNAME_VAR = "AOF_INDEX_GIT_USERNAME"
_PASSWORD_VAR = "AOF_INDEX_GIT_PASSWORD"
_ASKPASS_SCRIPT = f"""#!/bin/sh
case "$1" in
  [Uu]sername*) printf '%s\\n' "${_USERNAME_VAR}" ;;
  *) printf '%s\\n' "${_PASSWORD_VAR}" ;;
esac
"""
_FETCH_REFSPECS = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
_SHA = re.compile(r"^[0-9a-fA-F]{7,64}$")
_MAX_NAMES_SHOWN = 20

# What git prints, lower-cased, for each kind of failure (checked in this order).
_AUTH_SIGNS = (
    "authentication failed",
    "permission denied (publickey",
    "could not read username",
    "could not read password",
    "invalid username or password",
    "returned error: 401",
    "http basic: access denied",
)
_PERMISSION_SIGNS = ("returned error: 403",)
_NOT_FOUND_SIGNS = (
    "repository not found",
    "does not appear to be a git repository",
    "returned error: 404",
    "no such file or directory",
)


@dataclass(frozen=True)
class ChangeSet:
    """What changed in the source between two commits.

    ``added`` and ``modified`` are refs to load (as :meth:`GitReader.list_documents` would
    give them); ``deleted`` are the ids of documents that are gone. A renamed file is a
    deletion of its old id plus an addition of its new one.
    """

    since: str
    commit: str
    added: tuple[DocumentRef, ...] = ()
    modified: tuple[DocumentRef, ...] = ()
    deleted: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.modified or self.deleted)


@dataclass(frozen=True)
class _Blob:
    """A file of the tree: its mode, blob sha and size in bytes."""

    mode: str
    sha: str
    size: int


class GitReader(SourceReader):
    """Read the files of a git repository (any host: ``https://``, ``ssh://``, ``file://``,
    ``git@host:path`` or a local path).

    Args:
        url: the repository. Credentials in an ``https://user:pass@`` URL are taken out of
            it and used as ``username``/``password``.
        ref: branch, tag or commit to read.
        paths: which files to read, as for the GitHub and GitLab sources: prefixes
            (``docs/``, ``README.md``) and gitignore-style globs (``*.md``,
            ``docs/**/*.rst``); none reads every file.
        exclude: glob patterns (path, file name or any folder name) of files to leave out.
        cache_dir: folder holding the clones (default ``$XDG_CACHE_HOME/aof-index/git``,
            else ``~/.cache/aof-index/git``); each repository gets its own subfolder named
            after a hash of its URL.
        ssh_key: private key text for ``ssh://`` and ``git@host:`` URLs.
        username: HTTPS username (``git`` when only a password or token is given).
        password: HTTPS password or access token.
        timeout: seconds a fetch may take.
        source_name: the source's name, copied into every document's metadata.
        max_document_bytes: larger files are skipped (before their content is read).
        max_source_bytes: one load stops with ``SourceLimitError`` past this much text.

    Metadata: ``source`` and ``path`` (the path inside the repository), ``url``, ``ref``,
    ``commit``, ``file_name``, ``file_type``, ``title`` (first Markdown heading, HTML
    title, else the file name), ``last_modified`` and ``author`` (of the last commit
    touching the file), ``version`` (the blob sha).

    Example:
        >>> reader = GitReader(
        ...     "https://github.com/org/runbooks.git", ref="main", paths=["docs/"]
        ... )  # doctest: +SKIP
        >>> docs = reader.load_data()  # doctest: +SKIP
        >>> later = reader.changes_since(reader.commit)  # doctest: +SKIP
    """

    source_type = "Git"

    def __init__(
        self,
        url: str,
        ref: str = "main",
        paths: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        cache_dir: str | Path | None = None,
        ssh_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        **common: Unpack[ReaderOptions],
    ) -> None:
        super().__init__(**common)
        if not ref or ref.startswith("-"):
            raise ValueError(f"Git source {self.source_name!r}: invalid ref {ref!r}")
        self.url, url_username, url_password = _split_credentials(url)
        self.ref = ref
        self.paths = list(paths or [])
        self._filter = PathFilter(self.paths)
        self.exclude = list(exclude)
        self.timeout = timeout
        self.commit: str | None = None
        """The commit the last listing or :meth:`changes_since` resolved ``ref`` to."""
        self._username = username or url_username
        self._password = password if password is not None else url_password
        if self._password is not None and not self._username:
            self._username = "git"
        self._ssh_key = ssh_key
        self._remote = _remote_location(self.url)
        self.repository = _clone_dir(cache_dir, self._remote)
        """The bare clone this reader reads from."""
        self._cat_file: _CatFile | None = None

    def __repr__(self) -> str:
        return f"GitReader(url={self.url!r}, ref={self.ref!r}, source_name={self.source_name!r})"

    # --- listing -----------------------------------------------------------------------------

    def list_documents(self) -> Iterator[DocumentRef]:
        """Fetch, resolve ``ref`` and yield one ref per file (no content is read)."""
        yield from self._refs(self._update())

    def changes_since(self, commit: str) -> ChangeSet:
        """Fetch, resolve ``ref`` and say what changed since ``commit`` (a stored
        :attr:`commit`); only files that ``paths`` and ``exclude`` select count.

        Raises:
            SourceNotFoundError: ``commit`` is not in the repository (history rewritten):
                list every document instead.
        """
        current = self._update()
        since = self._rev_parse(commit)
        if since is None:
            raise SourceNotFoundError(
                f"Git source {self.source_name!r}: commit {commit!r} is not in {self.url} "
                "(was its history rewritten?); do a full listing instead of a diff"
            )
        status: dict[str, str] = {}
        tokens = self._stream("diff", "--name-status", "-z", "--no-renames", since, current)
        for letter, path in zip(tokens, tokens, strict=False):
            status[_decode(path)] = _decode(letter)[:1]
        changed = {path for path, letter in status.items() if letter != "D"}
        refs = {str(ref.metadata["source"]): ref for ref in self._refs(current, changed)}
        return ChangeSet(
            since=since,
            commit=current,
            added=tuple(refs[p] for p in sorted(refs) if status[p] == "A"),
            modified=tuple(refs[p] for p in sorted(refs) if status[p] != "A"),
            # Gone, or no longer readable (a file turned into a symlink or submodule).
            deleted=tuple(
                stable_id("git", self.url, path)
                for path in sorted(status)
                if status[path] != "A" and path not in refs and self._wanted(path)
            ),
        )

    def _refs(self, commit: str, only: set[str] | None = None) -> Iterator[DocumentRef]:
        files = dict(self._tree(commit, only))
        history = self._history(commit, set(files))
        for path, blob in files.items():
            when, author = history.get(path, (None, None))
            name = PurePosixPath(path).name
            yield DocumentRef(
                id=stable_id("git", self.url, path),
                version=blob.sha,
                metadata={
                    "source": path,
                    "path": path,
                    "url": self.url,
                    "ref": self.ref,
                    "commit": commit,
                    "file_name": name,
                    "file_type": file_type(name),
                    "title": name,
                    "last_modified": iso_time(when),
                    "author": author,
                },
                handle=blob,
            )

    def _tree(self, commit: str, only: set[str] | None) -> Iterator[tuple[str, _Blob]]:
        """(path, blob) of every selected file of ``commit``'s tree, in git's order."""
        for record in self._stream("ls-tree", "-r", "-l", "-z", "--full-tree", commit):
            info, _, raw_path = record.partition(b"\t")
            mode, kind, sha, size = _decode(info).split()
            path = _decode(raw_path)
            if (only is not None and path not in only) or not self._wanted(path):
                continue
            blob = _Blob(mode, sha, int(size)) if kind == "blob" else None
            reason = self._unreadable(path, blob)
            if reason is not None:
                self.skip(path, reason)
            elif blob is not None:
                yield path, blob

    def _wanted(self, path: str) -> bool:
        return self._filter.matches(path) and not excluded(path, self.exclude)

    @staticmethod
    def _unreadable(path: str, blob: _Blob | None) -> str | None:
        """Why the tree entry at ``path`` is not read, from the listing alone."""
        if blob is None:
            return "a submodule (a commit, not a file); add its repository as its own source"
        if not _safe_path(path):
            return "unsafe path (an empty, '.' or '..' part); not read"
        if blob.mode == _SYMLINK_MODE:
            return "symlink (not followed; only regular files are read)"
        return unsupported_reason(path)

    def _history(self, commit: str, paths: set[str]) -> dict[str, tuple[float, str]]:
        """``{path: (commit time, author)}`` of the last commit touching each of ``paths``.

        One ``git log`` pass, newest first, stopped as soon as every path was seen.
        """
        found: dict[str, tuple[float, str]] = {}
        if not paths:
            return found
        current: tuple[float, str] | None = None
        log = ("log", "-z", "--format=%x1e%ct%x1f%an", "--name-only", "--no-renames", commit)
        records = self._stream(*log, check=False)
        try:
            for record in records:
                token = _decode(record.lstrip(b"\n"))
                if token.startswith("\x1e"):
                    when, _, author = token[1:].partition("\x1f")
                    current = (float(when), author)
                elif current is not None and token in paths and token not in found:
                    found[token] = current
                    if len(found) == len(paths):
                        break
        finally:
            records.close()
        return found

    # --- loading -----------------------------------------------------------------------------

    def load_document(self, ref: DocumentRef) -> Document | None:
        """Read one listed file from the object store; ``None`` (and a skip) if not text."""
        path = str(ref.metadata.get("source") or ref.id)
        name = PurePosixPath(path).name
        blob = ref.handle if isinstance(ref.handle, _Blob) else self._lookup(ref, path)
        if blob is None:
            self.skip(path, f"not in {self.url} at {ref.metadata.get('commit') or self.commit}")
            return None
        reason = self._unreadable(path, blob)
        if reason is not None:
            self.skip(path, reason)
            return None
        if self.too_large(path, blob.size):
            return None
        try:
            data = self._blobs().read(blob.sha)
        except (OSError, ValueError) as exc:  # the cat-file process died: start a new one
            self.close()
            self.skip(path, f"unreadable: {exc}")
            return None
        if data is None:
            self.skip(path, f"blob {blob.sha} is missing from the clone")
            return None
        extracted = self.extract(path, name, data)
        if extracted is None:
            return None
        return self.make_document(ref, extracted.text, {"title": extracted.title or name})

    def lazy_load_data(self) -> Iterator[Document]:  # type: ignore[override]
        """Yield every readable file's document, streaming; skips land in :attr:`skipped`."""
        try:
            yield from super().lazy_load_data()
        finally:
            self.close()

    def load_documents(self, refs: Iterable[DocumentRef]) -> Iterator[Document]:
        """Read just ``refs`` (from :meth:`list_documents` or :meth:`changes_since`)."""
        try:
            yield from super().load_documents(refs)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the ``git cat-file`` process (a later load starts a new one)."""
        if self._cat_file is not None:
            self._cat_file.close()
            self._cat_file = None

    def _blobs(self) -> _CatFile:
        if self._cat_file is None:
            self._cat_file = _CatFile(self._git_command("cat-file", "--batch"), _base_env())
        return self._cat_file

    def _lookup(self, ref: DocumentRef, path: str) -> _Blob | None:
        """The blob of a ref that was not made by this reader's listing (no handle)."""
        commit = str(ref.metadata.get("commit") or self.commit or self._update())
        for record in self._stream("ls-tree", "-l", "-z", "--full-tree", commit, "--", path):
            mode, kind, sha, size = _decode(record.partition(b"\t")[0]).split()
            if kind == "blob":
                return _Blob(mode, sha, int(size))
        return None

    # --- fetching and resolving ------------------------------------------------------------

    def _update(self) -> str:
        """Clone or fetch, then resolve ``ref``; the commit is kept in :attr:`commit`."""
        if shutil.which("git") is None:
            raise SourceUnavailableError(
                f"Git source {self.source_name!r}: the git command is not installed; "
                f"install git (it must be on PATH) to read {self.url}"
            )
        new = not (self.repository / "HEAD").is_file()
        if new:
            self.repository.mkdir(parents=True, exist_ok=True)
            self._run("init", "--bare", "--quiet")
            self._run("config", "remote.origin.url", self._remote)
        try:
            self._fetch("--prune", "origin", *_FETCH_REFSPECS)
        except SourceError:
            if new:  # leave no empty clone of a mistyped or unreachable URL behind
                shutil.rmtree(self.repository, ignore_errors=True)
            raise
        commit = self._resolve()
        self.commit = commit
        return commit

    def _resolve(self) -> str:
        for name in (f"refs/remotes/origin/{self.ref}", f"refs/tags/{self.ref}", self.ref):
            commit = self._rev_parse(name)
            if commit is not None:
                return commit
        if _SHA.match(self.ref):  # a commit no branch or tag reaches: ask for it by name
            with contextlib.suppress(SourceError):
                self._fetch("origin", self.ref)
            commit = self._rev_parse(self.ref)
            if commit is not None:
                return commit
        branches = self._run(
            "for-each-ref", "--format=%(refname:lstrip=3)", "refs/remotes/origin"
        ).split()
        shown = ", ".join(branches[:_MAX_NAMES_SHOWN]) or "none"
        extra = len(branches) - _MAX_NAMES_SHOWN
        more = f" and {extra} more" if extra > 0 else ""
        raise SourceNotFoundError(
            f"Git source {self.source_name!r}: ref {self.ref!r} is not a branch, tag or commit "
            f"of {self.url}; its branches: {shown}{more}. Set git.ref to one of them."
        )

    def _rev_parse(self, name: str) -> str | None:
        out = self._run("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False)
        return out.strip() or None

    def _fetch(self, *args: str) -> None:
        with self._network_env() as env:
            command = self._git_command("fetch", "--quiet", *args)
            try:
                done = subprocess.run(
                    command, env=env, capture_output=True, timeout=self.timeout, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise SourceUnavailableError(
                    f"Git source {self.source_name!r}: fetching {self.url} took more than "
                    f"{self.timeout:g}s; check the network or raise the timeout"
                ) from exc
        if done.returncode != 0:
            raise self._fetch_error(done.stderr.decode("utf-8", "replace"))

    @contextlib.contextmanager
    def _network_env(self) -> Iterator[dict[str, str]]:
        """The environment of a fetch: credentials in temporary files and variables only."""
        env = _base_env()
        with tempfile.TemporaryDirectory(prefix="aof-index-git-") as folder:
            if self._username is not None or self._password is not None:
                script = Path(folder) / "askpass"
                script.write_text(_ASKPASS_SCRIPT)
                script.chmod(0o700)
                env["GIT_ASKPASS"] = str(script)
                env[_USERNAME_VAR] = self._username or ""
                env[_PASSWORD_VAR] = self._password or ""
            if self._ssh_key is not None:
                key = Path(folder) / "id_key"
                descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(self._ssh_key.strip() + "\n")
                ssh = os.environ.get("GIT_SSH_COMMAND") or "ssh"
                env["GIT_SSH_COMMAND"] = (
                    f"{ssh} -i {shlex.quote(str(key))} -o IdentitiesOnly=yes -o BatchMode=yes "
                    "-o StrictHostKeyChecking=accept-new"
                )
            yield env

    def _fetch_error(self, stderr: str) -> SourceError:
        detail = "; ".join(line.strip() for line in self._scrub(stderr).splitlines() if line)
        said = stderr.lower()
        where = f"Git source {self.source_name!r}: fetching {self.url} failed ({detail[-400:]})"
        if any(sign in said for sign in _AUTH_SIGNS):
            return SourceAuthError(
                f"{where}: the repository asked for credentials and rejected or lacked them; "
                "check the username and password (credentialsSecretRef) or the SSH key "
                "(sshKeySecretRef) and that they may read this repository"
            )
        if any(sign in said for sign in _PERMISSION_SIGNS):
            return SourcePermissionError(
                f"{where}: the credentials are valid but may not read this repository"
            )
        if any(sign in said for sign in _NOT_FOUND_SIGNS):
            return SourceNotFoundError(
                f"{where}: no repository there; check git.url (private repositories also "
                "answer 'not found' without credentials)"
            )
        return SourceUnavailableError(
            f"{where}: the repository could not be reached; check the URL, the network and "
            "that the host is up, then retry"
        )

    def _scrub(self, text: str) -> str:
        """``text`` without the password (plain or URL-encoded) or URL credentials."""
        text = re.sub(r"(://)[^/@\s]*@", r"\1", text)
        if self._password:
            for secret in {self._password, quote(self._password, safe="")}:
                text = text.replace(secret, "***")
        return text

    # --- running git -------------------------------------------------------------------------

    def _git_command(self, *args: str) -> list[str]:
        return [
            "git",
            f"--git-dir={self.repository}",
            "--literal-pathspecs",
            "-c",
            "credential.helper=",
            *args,
        ]

    def _run(self, *args: str, check: bool = True) -> str:
        """Run a local (no network) git command and return its output."""
        done = subprocess.run(
            self._git_command(*args), env=_base_env(), capture_output=True, check=False
        )
        if check and done.returncode != 0:
            raise SourceError(
                f"Git source {self.source_name!r}: git {args[0]} failed in the clone "
                f"{self.repository}: {self._scrub(done.stderr.decode('utf-8', 'replace'))}; "
                "delete that folder to clone again"
            )
        return done.stdout.decode("utf-8", "replace")

    def _stream(self, *args: str, check: bool = True) -> Generator[bytes, None, None]:
        """NUL-separated records of a local git command's output, read as they come."""
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                self._git_command(*args), env=_base_env(), stdout=subprocess.PIPE, stderr=errors
            )
            assert process.stdout is not None
            try:
                yield from _nul_records(process.stdout)
            finally:
                process.stdout.close()
                if process.poll() is None:
                    process.kill()
                code = process.wait()
            if check and code != 0:
                errors.seek(0)
                message = self._scrub(errors.read().decode("utf-8", "replace")).strip()
                raise SourceError(
                    f"Git source {self.source_name!r}: git {args[0]} failed in the clone "
                    f"{self.repository}: {message}; delete that folder to clone again"
                )


class _CatFile:
    """A ``git cat-file --batch`` process: blob contents by sha, one process for many."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self._process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._finalizer = weakref.finalize(self, _stop, self._process)

    def read(self, sha: str) -> bytes | None:
        """The content of blob ``sha``, or ``None`` if the clone lacks it."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(sha.encode("ascii") + b"\n")
        stdin.flush()
        header = stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob":  # "<sha> missing", or not a blob
            return None
        size = int(header[2])
        data = stdout.read(size)
        stdout.read(1)  # the newline after the content
        return data

    def close(self) -> None:
        self._finalizer()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _nul_records(stream: IO[bytes]) -> Iterator[bytes]:
    pending = b""
    while chunk := stream.read(65536):
        *records, pending = (pending + chunk).split(b"\0")
        yield from records
    if pending:
        yield pending


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _base_env() -> dict[str, str]:
    """The caller's environment, with git's messages in English and prompts disabled."""
    env = dict(os.environ)
    env.update(LC_ALL="C", LANGUAGE="", GIT_TERMINAL_PROMPT="0", GCM_INTERACTIVE="never")
    return env


def _split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without a password (without any user info for http(s)), user, password."""
    if "://" not in url:
        return url, None, None
    parts = urlsplit(url)
    if parts.password is None and (parts.username is None or parts.scheme not in _HTTP):
        return url, None, None
    host = parts.netloc.rpartition("@")[2]
    user = unquote(parts.username) if parts.username else None
    netloc = host if parts.scheme in _HTTP or not parts.username else f"{parts.username}@{host}"
    password = unquote(parts.password) if parts.password is not None else None
    return urlunsplit(parts._replace(netloc=netloc)), user, password


_HTTP = frozenset({"http", "https"})


def _remote_location(url: str) -> str:
    """What git fetches from: the URL, or an absolute path for a local path."""
    if "://" in url or re.match(r"^[^/\\]+:", url):  # a URL or scp-like host:path
        return url
    return str(Path(url).expanduser().resolve())


def _clone_dir(cache_dir: str | Path | None, url: str) -> Path:
    if cache_dir is None:
        cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache_dir = Path(cache_home) / "aof-index" / "git"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", url.rstrip("/").rsplit("/", 1)[-1])[:40]
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"{slug.removesuffix('.git') or 'repo'}-{digest}.git"


def _safe_path(path: str) -> bool:
    parts = path.split("/")
    return not path.startswith("/") and all(part not in {"", ".", ".."} for part in parts)

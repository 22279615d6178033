"""``aof-index memory export|import|keygen``: move conversations between chat stores, and
make encryption keys.

Export writes every conversation of a Memory's chat store as JSON Lines
(:mod:`aof_index.memory.transfer`), decoded: the file is plaintext, so it is created readable
by its owner only.  Import checks the whole file before it writes, then encodes every message
with the target Memory's settings: export from one Memory and import into another to change
backend, compression or encryption.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, TextIO

import typer
from llama_index.core.storage.chat_store.base import BaseChatStore

from aof_index.cli.common import (
    MemoryNameOption,
    MemoryOption,
    console,
    err_console,
    fail,
    load_memory_option,
    progress_bar,
)
from aof_index.errors import AofIndexError
from aof_index.memory.codec import generate_key
from aof_index.memory.transfer import (
    ConflictMode,
    Progress,
    export_conversations,
    import_conversations,
)

__all__ = ["memory_app"]

memory_app = typer.Typer(
    help="Conversations in a Memory's chat store: export, import, encryption keys.",
    no_args_is_help=True,
)

_LABELS = {"export": "Exporting", "read": "Reading", "import": "Importing"}
_PLAINTEXT = "plaintext: keep it private, delete it when done"


def _labelled(update: Progress) -> Progress:
    def progress(stage: str, done: int, total: int) -> None:
        update(_LABELS.get(stage, stage), done, total)

    return progress


def _close(store: BaseChatStore) -> None:
    """Close the store's connections (pools, clients) when it has a ``close``."""
    closer = getattr(store, "close", None)
    if callable(closer):
        with contextlib.suppress(Exception):
            closer()


@contextlib.contextmanager
def _stdout_utf8() -> Iterator[TextIO]:
    """Standard output as UTF-8 text with ``\\n`` line ends, whatever the locale."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # already a text-only stream (an embedding application's)
        yield sys.stdout
        return
    sys.stdout.flush()
    wrapper = io.TextIOWrapper(buffer, encoding="utf-8", newline="\n", write_through=True)
    try:
        yield wrapper
    finally:
        wrapper.flush()
        wrapper.detach()


@contextlib.contextmanager
def _private_file(path: Path) -> Iterator[TextIO]:
    """Write ``path`` atomically, readable and writable by its owner only (mode 0600):
    a temporary file beside it takes the text and replaces it only when complete."""
    directory = path.parent if str(path.parent) else Path()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@memory_app.command("export")
def export(
    file: Annotated[
        str | None,
        typer.Argument(
            help="File to write (default: standard output, also `-`).",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", metavar="OUT", help="Same as FILE: where to write, `-` for stdout."
        ),
    ] = None,
    memory: MemoryOption = None,
    name: MemoryNameOption = None,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Only conversations whose key starts with this.")
    ] = "",
) -> None:
    """Export the Memory's conversations as JSON Lines (decoded: the file is plaintext).

    A file is created readable by its owner only, and replaced only once complete.
    """
    if file is not None and output is not None and file != output:
        raise typer.BadParameter(
            f"FILE ({file}) and --output ({output}) differ; give one of them", param_hint="FILE"
        )
    target = output or file or "-"
    mem = load_memory_option(memory, name)
    store = mem.chat_store
    destination: contextlib.AbstractContextManager[TextIO] = (
        _stdout_utf8() if target == "-" else _private_file(Path(target))
    )
    try:
        with progress_bar(enabled=err_console.is_terminal) as update, destination as out:
            count = export_conversations(store, out, prefix=prefix, progress=_labelled(update))
    except AofIndexError as exc:
        raise fail(f"export from memory {mem.name} failed: {exc}") from exc
    except OSError as exc:
        raise fail(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        _close(store)
    where = "standard output" if target == "-" else target
    scope = f" with keys starting {prefix!r}" if prefix else ""
    err_console.print(
        f"[bold green]Exported[/] {count} conversation(s){scope} from memory "
        f"[bold]{mem.name}[/] to {where} ({_PLAINTEXT}).",
        highlight=False,
    )


@memory_app.command("import")
def import_(
    file: Annotated[
        str, typer.Argument(metavar="IN", help="Export to read (`-`: standard input).")
    ],
    memory: MemoryOption = None,
    name: MemoryNameOption = None,
    on_conflict: Annotated[
        ConflictMode,
        typer.Option(
            "--on-conflict",
            help="For conversations the Memory already holds: error (import nothing), "
            "replace them, skip them, or append the imported messages after theirs.",
        ),
    ] = "error",
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Import an export into the Memory, encoded with the Memory's own settings.

    The whole file is checked first: if any line is invalid, or (with --on-conflict error)
    a conversation already exists, nothing is written.
    """
    mem = load_memory_option(memory, name)
    store = mem.chat_store
    try:
        with contextlib.ExitStack() as stack:
            if file == "-":
                stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="\n")
                stack.callback(stdin.detach)
                source: TextIO = stdin
            else:
                source = stack.enter_context(Path(file).open(encoding="utf-8", newline="\n"))
            bar = progress_bar(enabled=err_console.is_terminal and not as_json)
            update = stack.enter_context(bar)
            report = import_conversations(
                store,
                source,
                on_conflict=on_conflict,
                progress=_labelled(update),
            )
    except AofIndexError as exc:
        raise fail(f"{file}: {exc}") from exc
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or exc}") from exc
    finally:
        _close(store)
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
        return
    err_console.print(
        f"[bold green]Imported[/] {report.conversations} conversation(s), {report.messages} "
        f"message(s) into memory [bold]{mem.name}[/]: {report.created} new, "
        f"{report.replaced} replaced, {report.appended} appended to, {report.skipped} skipped.",
        highlight=False,
    )


@memory_app.command("keygen")
def keygen() -> None:
    """Print a new encryption key for spec.access.encryption.keySecretRef."""
    typer.echo(generate_key())
    err_console.print(
        "Put it in a Kubernetes Secret referenced by spec.access.encryption.keySecretRef, e.g. "
        "`kubectl create secret generic memory-key --from-literal=key=<KEY>` (to rotate: new "
        "key first, old ones after it, comma-separated).",
        highlight=False,
    )

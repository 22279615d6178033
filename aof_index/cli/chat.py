"""``aof-index chat``: a conversation in the terminal, history kept in the chat store.

The history is the Memory's ``conversations()`` in the Memory's namespace, so
``spec.conversational`` applies: trimming, TTL, summaries, compression and encryption.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from aof_index.cli.common import (
    MemoryNameOption,
    MemoryOption,
    console,
    err_console,
    fail,
    load_memory_option,
)
from aof_index.engine.chat import ChatSession
from aof_index.errors import AofIndexError
from aof_index.llms import NO_LLM_HINT, llm_from_env

__all__ = ["chat"]

HELP = "Commands: /history shows the conversation, /clear deletes it, /exit leaves."


def chat(
    conversation: Annotated[
        str, typer.Option("--conversation", "-c", help="Conversation id (resumes if it exists).")
    ] = "default",
    memory: MemoryOption = None,
    name: MemoryNameOption = None,
) -> None:
    """Chat with the Memory; the history is stored and resumed by conversation id."""
    mem = load_memory_option(memory, name)
    try:
        history = mem.conversations()
    except (AofIndexError, ValueError) as exc:
        raise fail(str(exc)) from exc
    session = ChatSession(history, conversation, mem.retriever(), llm=llm_from_env())
    try:
        _converse(session, conversation, mem.name)
    finally:
        history.close()  # let a summary started by this session finish


def _converse(session: ChatSession, conversation: str, memory_name: str) -> None:
    interactive = sys.stdin.isatty()
    previous = session.history()
    console.print(
        f"Conversation [bold]{conversation}[/] in memory [bold]{memory_name}[/] "
        f"({len(previous)} stored messages). {HELP}"
    )
    if session.llm is None:
        err_console.print(f"[dim]{NO_LLM_HINT}[/]", highlight=False)
    while True:
        try:
            line = console.input("[bold cyan]you>[/] ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            break
        if not interactive and not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in {"/exit", "/quit"}:
            break
        if text == "/history":
            for message in session.history():
                console.print(f"[bold]{message.role.value}>[/] {message.content}", highlight=False)
            continue
        if text == "/clear":
            session.clear()
            console.print("Conversation cleared.")
            continue
        try:
            turn = session.send(text)
        except AofIndexError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            continue
        console.print(f"[bold green]assistant>[/] {turn.reply}", highlight=False)

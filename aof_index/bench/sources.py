"""Reader benchmark (``aof-index bench sources``): how fast each reader reads, next to a
baseline in the same run, and what the incremental check (a listing when nothing changed)
costs.

Workloads
---------
- **LocalFiles** on a folder (the Kubernetes docs of ``../shared/data/k8s-docs`` by
  default). Baseline: LlamaIndex's ``SimpleDirectoryReader(recursive=True)`` on the same
  folder.
- **Git** on a repository generated for the run: ``git_files`` Markdown files (the folder's
  documents, repeated with a distinct header each), in 100-file folders, one commit, read
  through a ``file://`` URL. Ours clones it bare into a cache and reads blobs through one
  ``git cat-file --batch`` process. Baseline: ``git clone`` then ``SimpleDirectoryReader``
  on the checkout, what a LlamaIndex user does without a git reader.
- **URL** crawl of a site generated for the run: ``pages`` HTML pages (the folder's
  documents wrapped in a header, navigation and footer, each linking to up to 8 child
  pages) served by a real HTTP server on 127.0.0.1 that waits ``delay_ms`` before each
  answer, standing in for a remote site's latency. Ours crawls with ``concurrency``
  requests in flight per host; the baseline is the same reader one request at a time, so
  the ratio is what the concurrency limit buys.

Figures: documents, MB of extracted text, seconds, documents/s, MB/s of the full load (the
listing included, as a first sync does), the baseline's, ``ratio`` = baseline seconds / our
seconds, and ``listing_seconds``: a second listing of the unchanged source by the same
reader (for Git: fetch and ``ls-tree``; for URL: a crawl of conditional GETs, answered
``304 Not Modified`` by the site, counted in ``listing_answers``, whose links come from the
bodies kept from the first crawl). Each
figure is one run on a shared machine: compare ratios, not absolute times, across runs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from llama_index.core.schema import Document

__all__ = [
    "ReaderFigures",
    "SourcesBenchConfig",
    "bench_git",
    "bench_local_files",
    "bench_url",
    "run_sources_bench",
]


@dataclass(frozen=True)
class SourcesBenchConfig:
    """What ``aof-index bench sources`` measures."""

    corpus: Path
    """Folder of text documents (LocalFiles reads it; Git and URL are made from it)."""
    readers: Sequence[str] = ("LocalFiles", "Git", "URL")
    git_files: int = 3000
    pages: int = 500
    concurrency: int = 4
    delay_ms: float = 20.0


@dataclass
class ReaderFigures:
    """One reader's figures and its baseline's, from the same run."""

    reader: str
    documents: int
    megabytes: float
    seconds: float
    listing_seconds: float
    baseline: str
    baseline_documents: int
    baseline_seconds: float
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def docs_per_s(self) -> float:
        """Documents per second of the full load."""
        return self.documents / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        """MB of extracted text per second of the full load."""
        return self.megabytes / self.seconds if self.seconds else 0.0

    @property
    def ratio(self) -> float:
        """Baseline seconds / our seconds (above 1: ours is faster)."""
        return self.baseline_seconds / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Every figure, derived ones included, rounded for printing."""
        data = asdict(self)
        data.update(
            docs_per_s=round(self.docs_per_s, 1),
            mb_per_s=round(self.mb_per_s, 2),
            ratio=round(self.ratio, 2),
            seconds=round(self.seconds, 3),
            listing_seconds=round(self.listing_seconds, 4),
            baseline_seconds=round(self.baseline_seconds, 3),
            megabytes=round(self.megabytes, 2),
        )
        return data


def _timed(work: Callable[[], list[Document]]) -> tuple[list[Document], float]:
    start = time.perf_counter()
    documents = work()
    return documents, time.perf_counter() - start


def _megabytes(documents: Sequence[Document]) -> float:
    return sum(len(d.text.encode("utf-8")) for d in documents) / 1e6


def _corpus_texts(corpus: Path) -> list[str]:
    texts = [p.read_text(encoding="utf-8") for p in sorted(corpus.rglob("*.md"))]
    if not texts:
        raise FileNotFoundError(f"{corpus} holds no Markdown files to build the workload from")
    return texts


def _simple_directory(folder: Path) -> list[Document]:
    from llama_index.core import SimpleDirectoryReader

    return SimpleDirectoryReader(str(folder), recursive=True).load_data(show_progress=False)


# --- LocalFiles ---------------------------------------------------------------------------


def bench_local_files(corpus: Path) -> ReaderFigures:
    """LocalFiles on ``corpus`` against ``SimpleDirectoryReader``."""
    from aof_index_readers.local_files import LocalFilesReader

    reader = LocalFilesReader([corpus], source_name="bench")
    ours, seconds = _timed(reader.load_data)
    start = time.perf_counter()
    listed = sum(1 for _ in reader.list_documents())
    listing = time.perf_counter() - start
    theirs, baseline = _timed(lambda: _simple_directory(corpus))
    return ReaderFigures(
        reader="LocalFiles",
        documents=len(ours),
        megabytes=_megabytes(ours),
        seconds=seconds,
        listing_seconds=listing,
        baseline="SimpleDirectoryReader",
        baseline_documents=len(theirs),
        baseline_seconds=baseline,
        notes={"listed": listed, "skipped": len(reader.skipped)},
    )


# --- Git ----------------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def make_repository(where: Path, texts: Sequence[str], files: int) -> Path:
    """A git repository of ``files`` Markdown files made from ``texts``, one commit."""
    repo = where / "repo"
    repo.mkdir()
    _git("init", "-q", "-b", "main", cwd=repo)
    for i in range(files):
        path = repo / f"section-{i // 100:03d}" / f"page-{i:05d}.md"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"# Page {i}\n\n{texts[i % len(texts)]}", encoding="utf-8")
    _git("add", "-A", cwd=repo)
    _git("commit", "-q", "-m", "bench corpus", cwd=repo)
    return repo


def bench_git(texts: Sequence[str], files: int, where: Path) -> ReaderFigures:
    """Git on a generated repository against ``git clone`` + ``SimpleDirectoryReader``."""
    from aof_index_readers.git import GitReader

    repo = make_repository(where, texts, files)
    url = repo.as_uri()
    reader = GitReader(url=url, ref="main", cache_dir=where / "cache", source_name="bench")
    try:
        ours, seconds = _timed(reader.load_data)
        start = time.perf_counter()
        listed = sum(1 for _ in reader.list_documents())
        listing = time.perf_counter() - start
    finally:
        reader.close()

    def clone_and_read() -> list[Document]:
        checkout = where / "checkout"
        subprocess.run(
            ["git", "clone", "-q", "--branch", "main", url, str(checkout)],
            check=True,
            capture_output=True,
        )
        shutil.rmtree(checkout / ".git")
        return _simple_directory(checkout)

    theirs, baseline = _timed(clone_and_read)
    return ReaderFigures(
        reader="Git",
        documents=len(ours),
        megabytes=_megabytes(ours),
        seconds=seconds,
        listing_seconds=listing,
        baseline="git clone + SimpleDirectoryReader",
        baseline_documents=len(theirs),
        baseline_seconds=baseline,
        notes={"files": files, "listed": listed},
    )


# --- URL ----------------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html><head><title>Page {i}</title><meta name="author" content="bench"></head>
<body><header><nav><a href="/page-0.html">Home</a> | <a href="/about.html">About</a></nav>
</header><main><article>{body}</article><ul>{links}</ul></main>
<footer>Generated for the reader benchmark. Copyright nobody.</footer></body></html>
"""


def make_site(where: Path, texts: Sequence[str], pages: int) -> Path:
    """``pages`` HTML pages: page ``i`` links to pages ``8i+1`` to ``8i+8``."""
    import html

    site = where / "site"
    site.mkdir()
    for i in range(pages):
        body = "".join(
            f"<p>{html.escape(paragraph)}</p>"
            for paragraph in texts[i % len(texts)].split("\n\n")
            if paragraph.strip()
        )
        children = range(8 * i + 1, min(8 * i + 9, pages))
        links = "".join(f'<li><a href="/page-{c}.html">Page {c}</a></li>' for c in children)
        (site / f"page-{i}.html").write_text(
            _PAGE.format(i=i, body=body, links=links), encoding="utf-8"
        )
    (site / "robots.txt").write_text("User-agent: *\nAllow: /\n", encoding="utf-8")
    return site


@contextmanager
def serve(folder: Path, delay_ms: float, answers: Counter[str]) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1, each answer after ``delay_ms``; yields the URL.

    ``answers`` counts the status codes sent.
    """

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def handle_one_request(self) -> None:
            time.sleep(delay_ms / 1000)
            super().handle_one_request()

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            answers[str(int(code))] += 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def bench_url(
    texts: Sequence[str], pages: int, concurrency: int, delay_ms: float, where: Path
) -> ReaderFigures:
    """URL crawl of a generated site at ``concurrency`` per host, against 1 at a time."""
    from aof_index_readers.url import URLReader

    site = make_site(where, texts, pages)

    def reader(base: str, in_flight: int) -> URLReader:
        return URLReader(
            urls=[f"{base}/page-0.html"],
            crawl=True,
            max_depth=10,
            allow_private=["127.0.0.1"],
            per_host_concurrency=in_flight,
            max_pages=pages + 10,
            source_name="bench",
        )

    answers: Counter[str] = Counter()
    with serve(site, delay_ms, answers) as base:
        ours_reader = reader(base, concurrency)
        ours, seconds = _timed(ours_reader.load_data)
        answers.clear()
        start = time.perf_counter()
        listed = sum(1 for _ in ours_reader.list_documents())
        listing = time.perf_counter() - start
        listing_answers = dict(answers)
        theirs, baseline = _timed(reader(base, 1).load_data)
    return ReaderFigures(
        reader="URL",
        documents=len(ours),
        megabytes=_megabytes(ours),
        seconds=seconds,
        listing_seconds=listing,
        baseline="URLReader, 1 request at a time",
        baseline_documents=len(theirs),
        baseline_seconds=baseline,
        notes={
            "pages": pages,
            "concurrency": concurrency,
            "delay_ms": delay_ms,
            "listed": listed,
            "listing_answers": listing_answers,
        },
    )


def run_sources_bench(
    config: SourcesBenchConfig, *, progress: Callable[[str], None] | None = None
) -> list[ReaderFigures]:
    """Run the configured readers' workloads, one after the other; temporary files removed."""
    texts = _corpus_texts(config.corpus)
    results: list[ReaderFigures] = []
    with tempfile.TemporaryDirectory(prefix="aof-bench-sources-") as tmp:
        for name in config.readers:
            if progress is not None:
                progress(name)
            where = Path(tmp) / name
            where.mkdir()
            if name == "LocalFiles":
                results.append(bench_local_files(config.corpus))
            elif name == "Git":
                results.append(bench_git(texts, config.git_files, where))
            elif name == "URL":
                results.append(
                    bench_url(texts, config.pages, config.concurrency, config.delay_ms, where)
                )
            else:
                raise ValueError(f"no benchmark for reader {name!r}; use LocalFiles, Git, URL")
    return results

"""LocalFilesReader: stable ids, cheap versions, skipped binaries, no escape from the root.

Real files in a temporary folder; real pypdf and python-docx parse a PDF written byte by byte
here and a DOCX written with python-docx. Nothing stands in.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from pathlib import Path

import docx
import pytest

from aof_index_readers.base import STANDARD_METADATA
from aof_index_readers.errors import SourceNotFoundError
from aof_index_readers.local_files import LocalFilesReader, document_id


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# A\n\nalpha")
    (root / "sub" / "b.txt").write_text("bravo")
    (root / "page.html").write_text(
        "<html><head><title>Greeting</title></head><script>x()</script>"
        "<body><h1>Hi</h1><p>there</p></body>"
    )
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (root / "blob.txt").write_bytes(b"text\x00with nul")
    (root / "empty.md").write_text("  \n")
    return root


def _pdf(text: str, title: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica, with a ``/Title``."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) >>".encode(),
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    out.write(b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets))
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>\n"
        f"startxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def test_reads_text_files_and_reports_skipped(tree: Path) -> None:
    reader = LocalFilesReader([tree])
    docs = {Path(d.metadata["source"]).name: d for d in reader.load_data()}
    assert set(docs) == {"a.md", "b.txt", "page.html"}
    assert docs["page.html"].text.split() == ["Greeting", "Hi", "there"]
    reasons = {Path(s.what).name: s.reason for s in reader.skipped}
    assert reasons["image.png"].startswith("unsupported file type")
    assert "NUL" in reasons["blob.txt"]
    assert reasons["empty.md"] == "empty"


def test_ids_are_stable_and_versions_follow_content(tree: Path) -> None:
    first = {d.doc_id: d.metadata["version"] for d in LocalFilesReader([tree]).load_data()}
    (tree / "a.md").write_text("# A\n\nalpha, edited")
    second = {d.doc_id: d.metadata["version"] for d in LocalFilesReader([tree]).load_data()}
    assert first.keys() == second.keys()
    changed = [k for k in first if first[k] != second[k]]
    assert changed == [document_id(tree.resolve(), (tree / "a.md").resolve())]


def test_ids_match_the_previous_scheme(tree: Path) -> None:
    """Indexes built before the port keep their ids: ``uuid5("file:<root>/<relative>")``."""
    ids = {ref.metadata["file_name"]: ref.id for ref in LocalFilesReader([tree]).list_documents()}
    expected = uuid.uuid5(uuid.NAMESPACE_URL, f"file:{tree.resolve().as_posix()}/sub/b.txt")
    assert ids["b.txt"] == str(expected)


def test_listing_reads_no_content(tree: Path) -> None:
    """The version comes from ``stat``: same size and mtime, same version, whatever the bytes."""
    path = tree / "sub" / "b.txt"
    stat = path.stat()
    (ref,) = [r for r in LocalFilesReader([tree]).list_documents() if r.handle == path.resolve()]
    assert ref.version == f"{stat.st_mtime_ns}-{stat.st_size}"
    path.write_text("BRAVO")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (again,) = [r for r in LocalFilesReader([tree]).list_documents() if r.id == ref.id]
    assert again.version == ref.version
    path.write_text("bravo!")
    (edited,) = [r for r in LocalFilesReader([tree]).list_documents() if r.id == ref.id]
    assert edited.version != ref.version


def test_loaded_metadata_keeps_the_listed_version_and_adds_a_content_hash(tree: Path) -> None:
    reader = LocalFilesReader([tree / "a.md"], source_name="handbook")
    (ref,) = reader.list_documents()
    assert ref.metadata["title"] == "a.md"  # the listing reads no content
    (doc,) = reader.load_documents([ref])
    assert doc.doc_id == ref.id
    assert set(STANDARD_METADATA) <= set(doc.metadata)
    assert doc.metadata["version"] == ref.version
    assert doc.metadata["content_hash"] == hashlib.sha256(b"# A\n\nalpha").hexdigest()
    assert doc.metadata["title"] == "A"  # the first Markdown heading
    assert doc.metadata["source_name"] == "handbook"
    assert doc.metadata["source_type"] == "LocalFiles"
    assert (doc.metadata["file_name"], doc.metadata["file_type"]) == ("a.md", "md")
    assert doc.metadata["source"] == str((tree / "a.md").resolve())


def test_titles_come_from_html_title_or_the_file_name(tree: Path) -> None:
    docs = {d.metadata["file_name"]: d for d in LocalFilesReader([tree]).load_data()}
    assert docs["page.html"].metadata["title"] == "Greeting"
    assert docs["b.txt"].metadata["title"] == "b.txt"


def test_docx_and_pdf_are_read(tmp_path: Path) -> None:
    document = docx.Document()
    document.core_properties.title = "Failover"
    document.add_paragraph("Promote the replica first.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "redis"
    table.rows[0].cells[1].text = "6379"
    document.save(str(tmp_path / "failover.docx"))
    (tmp_path / "guide.pdf").write_bytes(_pdf("Drain the node before upgrades", "Upgrades"))
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not a zip")
    reader = LocalFilesReader([tmp_path])
    docs = {d.metadata["file_name"]: d for d in reader.load_data()}
    assert set(docs) == {"failover.docx", "guide.pdf"}
    assert "Promote the replica first." in docs["failover.docx"].text
    assert "redis | 6379" in docs["failover.docx"].text
    assert docs["failover.docx"].metadata["title"] == "Failover"
    assert docs["guide.pdf"].text.strip() == "Drain the node before upgrades"
    assert docs["guide.pdf"].metadata["title"] == "Upgrades"
    assert [Path(s.what).name for s in reader.skipped] == ["broken.docx"]
    assert reader.skipped[0].reason.startswith("malformed DOCX")


def test_files_over_the_limit_are_skipped_unread(tree: Path) -> None:
    (tree / "big.md").write_text("x" * 200)
    reader = LocalFilesReader([tree], max_document_bytes=100)
    names = {d.metadata["file_name"] for d in reader.load_data()}
    assert "big.md" not in names and "a.md" in names
    reasons = {Path(s.what).name: s.reason for s in reader.skipped}
    assert "over the per-document limit" in reasons["big.md"]


def test_exclude_patterns(tree: Path) -> None:
    docs = LocalFilesReader([tree], exclude=["sub", "*.html"]).load_data()
    assert sorted(Path(d.metadata["source"]).name for d in docs) == ["a.md"]


def test_globs_relative_to_root_and_absolute(tree: Path) -> None:
    relative = LocalFilesReader(["**/*.txt"], root=tree).load_data()
    assert sorted(d.metadata["file_name"] for d in relative) == ["b.txt"]
    absolute = LocalFilesReader([str(tree / "*.md")]).load_data()
    assert sorted(d.metadata["file_name"] for d in absolute) == ["a.md"]
    assert absolute[0].doc_id == document_id(tree.resolve(), (tree / "a.md").resolve())


def test_symlink_outside_root_is_skipped(tree: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not index")
    os.symlink(secret, tree / "link.txt")
    reader = LocalFilesReader([tree])
    texts = [d.text for d in reader.load_data()]
    assert "do not index" not in texts
    assert any("outside the root" in s.reason for s in reader.skipped)


def test_dotdot_cannot_leave_the_root(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("do not index")
    reader = LocalFilesReader([tree / ".." / "secret.txt"], root=tree)
    assert reader.load_data() == []
    assert [s.reason for s in reader.skipped] == [f"resolves outside the root {tree.resolve()}"]


def test_missing_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        LocalFilesReader([tmp_path / "nope"]).load_data()
    with pytest.raises(SourceNotFoundError, match="LocalFiles source 'kb'"):
        list(LocalFilesReader([tmp_path / "nope"], source_name="kb").list_documents())


def test_a_listing_then_a_load_report_each_skipped_file_once(tree: Path) -> None:
    reader = LocalFilesReader([tree])
    refs = list(reader.list_documents())
    documents = list(reader.load_documents(refs))
    list(reader.list_documents())
    assert len(documents) == 3
    whats = [s.what for s in reader.skipped]
    assert len(whats) == len(set(whats))
    assert {Path(w).name for w in whats} >= {"image.png", "blob.txt", "empty.md"}

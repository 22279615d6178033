"""A persisted BM25 keyword index over LlamaIndex nodes, and its retriever.

Built on `bm25s <https://github.com/xhluca/bm25s>`_: bm25s scores a whole corpus with sparse
numpy arrays, tokenises with its own :class:`bm25s.tokenization.Tokenizer` (English
stopwords, PyStemmer stemming) and filters before top-k selection with ``retrieve``'s
``weight_mask`` (added in September 2024, bm25s PR #50, well before the ``bm25s>=0.2.10``
the project requires; so no fallback is needed). What bm25s lacks, and this module adds: node
storage with upsert/delete by node id, lazy rebuilds, metadata filters, and a crash-safe
on-disk format.

On-disk layout (``persist_dir``)::

    CURRENT              one line: the name of the live version directory
    v-<hex>/             one complete, immutable version
        manifest.json    format version, parameters, counts
        nodes.jsonl      one node per line (LlamaIndex docstore JSON), in index order
        tokens.npy       every node's token ids, concatenated (int32)
        offsets.npy      where each node's token ids start and end (int64, len = nodes + 1)
        vocab.json       the tokenizer's vocabulary (same keys as bm25s' save_vocab)
        model/           the bm25s model (``BM25.save``), absent when it was stale

A version is written completely into a temporary directory, renamed into place, and only
then made live by atomically replacing ``CURRENT`` (``os.replace`` of a file); a crash at any
point leaves the previous version live and intact. (``os.replace`` cannot swap a directory
over a non-empty one, hence the pointer file.) One writer per directory is assumed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import numpy.typing as npt
import Stemmer
from bm25s.tokenization import Tokenizer
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
from llama_index.core.storage.docstore.utils import doc_to_json, json_to_doc
from llama_index.core.vector_stores.types import MetadataFilters
from pydantic import TypeAdapter

from aof_index_retrievers.filters import matches

__all__ = ["BM25Index", "BM25Retriever"]

# bm25s sets its own logger to DEBUG on import, overriding the application's logging
# configuration; let it inherit the application's levels again.
logging.getLogger("bm25s").setLevel(logging.NOTSET)

_FORMAT = "aof-bm25-index"
_FORMAT_VERSION = 1
_CURRENT = "CURRENT"
_VERSION_PREFIX = "v-"
_TMP_PREFIX = ".tmp-"
# Tokens are runs of two or more word characters (bm25s' and scikit-learn's default).
_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
# How many distinct filters keep a cached mask per model build.
_MASK_CACHE_SIZE = 64
_METADATA_ADAPTER: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])

StopwordsSpec = str | Sequence[str] | None


@dataclass
class _Snapshot:
    """One immutable build of the bm25s model and the nodes it indexes, in model order.

    Queries score against a snapshot outside the index lock; a change to the index makes a
    new snapshot on the next query, so a snapshot is never mutated except for its mask cache
    (guarded by the index lock).
    """

    model: Any  # bm25s.BM25, or None when nothing is indexable
    node_ids: list[str]
    nodes: list[BaseNode]
    n_vocab: int
    masks: OrderedDict[str, tuple[npt.NDArray[np.float32], int]] = field(
        default_factory=OrderedDict
    )


class BM25Index:
    """A BM25 keyword index over LlamaIndex nodes, persisted to a directory.

    Args:
        persist_dir: Where :meth:`persist` writes (and :meth:`load` reads). ``None`` keeps the
            index in memory until :meth:`persist` is given a directory.
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
        method: bm25s scoring variant: ``"lucene"``, ``"robertson"``, ``"atire"``,
            ``"bm25l"`` or ``"bm25+"``.
        stemmer_language: A PyStemmer (Snowball) language such as ``"english"``, or ``None`` for
            no stemming.
        stopwords: A bm25s stopword list name (``"en"``, ``"english"``, ``"de"``, ...), a
            sequence of words, or ``None`` to keep every word.
        metadata_mode: Which text of a node is indexed: ``node.get_content(metadata_mode)``.
            ``EMBED`` (default) indexes the text plus the metadata the embedding also sees;
            ``NONE`` indexes the text alone.
        window: How many neighbouring chunks on each side (a node's ``prev_node`` /
            ``next_node`` of the same source document, when indexed too) are scored with
            it. ``0`` (default) scores each node's own text; ``1`` scores a chunk as the
            passage made of it and the chunks around it, so a query whose words fall on both
            sides of a chunk boundary still finds it. The chunk's own text counts twice in
            that passage, so a chunk holding a term ranks above the neighbours that only see
            it through the window. The node returned is the chunk itself.

    The constructor does no I/O. Nodes are upserted by id with :meth:`add`; each node is
    tokenised once, when added. bm25s cannot add documents to a built model incrementally,
    so any change marks the model stale and the next query (or :meth:`build`) rebuilds it
    from the cached token ids. Scores are raw BM25 scores, and only positive ones are
    returned: documents that share no term with the query score 0. (With ``robertson``'s
    idf a term in over half the documents scores below 0 and is dropped too.)
    Thread-safe; one writer process per ``persist_dir``.
    """

    def __init__(
        self,
        persist_dir: str | Path | None = None,
        *,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stemmer_language: str | None = "english",
        stopwords: StopwordsSpec = "en",
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        window: int = 0,
    ) -> None:
        _check_window(window)
        if stemmer_language is not None and stemmer_language not in Stemmer.algorithms():
            raise ValueError(
                f"stemmer_language={stemmer_language!r} is not a PyStemmer language; "
                f"choose one of {sorted(Stemmer.algorithms())} or None"
            )
        if method not in ("lucene", "robertson", "atire", "bm25l", "bm25+"):
            raise ValueError(
                f"method={method!r} is not a bm25s method; choose lucene, robertson, "
                "atire, bm25l or bm25+"
            )
        self._persist_dir = Path(persist_dir) if persist_dir is not None else None
        self._k1 = float(k1)
        self._b = float(b)
        self._method = method
        self._stemmer_language = stemmer_language
        self._stopwords: str | list[str] | None = (
            stopwords if stopwords is None or isinstance(stopwords, str) else list(stopwords)
        )
        self._metadata_mode = MetadataMode(metadata_mode)
        self._window = window
        self._tokenizer = _make_tokenizer(stemmer_language, self._stopwords)

        self._lock = threading.RLock()
        self._persist_lock = threading.Lock()
        self._nodes: dict[str, BaseNode] = {}
        self._tokens: dict[str, npt.NDArray[np.int32]] = {}
        self._by_ref_doc: dict[str, set[str]] = {}
        self._filter_metadata: dict[str, dict[str, Any]] = {}
        self._generation = 0
        self._snapshot: _Snapshot | None = None
        self._snapshot_generation = -1

    # ------------------------------------------------------------------ properties

    @property
    def persist_dir(self) -> Path | None:
        """The directory :meth:`persist` writes to by default."""
        return self._persist_dir

    @property
    def params(self) -> dict[str, Any]:
        """The index's parameters, as given to the constructor (JSON-serialisable)."""
        return {
            "k1": self._k1,
            "b": self._b,
            "method": self._method,
            "stemmer_language": self._stemmer_language,
            "stopwords": self._stopwords,
            "metadata_mode": self._metadata_mode.value,
            "window": self._window,
        }

    # ------------------------------------------------------------------ mutation

    def add(self, nodes: Sequence[BaseNode]) -> None:
        """Upsert ``nodes`` by node id: a node whose id is already indexed replaces it.

        The index keeps its own copy of each node, without its embedding.
        """
        nodes = list(nodes)
        if not nodes:
            return
        texts = [node.get_content(metadata_mode=self._metadata_mode) for node in nodes]
        with self._lock:
            token_ids = self._tokenizer.tokenize(
                texts,
                update_vocab=True,
                return_as="ids",
                show_progress=False,
                allow_empty=False,
            )
            for node, ids in zip(nodes, token_ids, strict=True):
                node_id = node.node_id
                self._unlink(node_id)
                stored = node.model_copy(
                    update={"embedding": None, "metadata": dict(node.metadata)}
                )
                self._nodes[node_id] = stored
                self._tokens[node_id] = np.asarray(ids, dtype=np.int32)
                ref = stored.ref_doc_id
                if ref is not None:
                    self._by_ref_doc.setdefault(ref, set()).add(node_id)
            self._generation += 1

    def delete(self, node_ids: str | Iterable[str]) -> int:
        """Remove nodes by id; unknown ids are ignored. Returns how many were removed."""
        if isinstance(node_ids, str):
            node_ids = [node_ids]
        with self._lock:
            removed = 0
            for node_id in node_ids:
                if node_id in self._nodes:
                    self._unlink(node_id)
                    del self._nodes[node_id]
                    del self._tokens[node_id]
                    removed += 1
            if removed:
                self._generation += 1
            return removed

    def delete_ref_doc(self, ref_doc_id: str) -> int:
        """Remove every node whose source document is ``ref_doc_id``. Returns the count."""
        with self._lock:
            return self.delete(list(self._by_ref_doc.get(ref_doc_id, ())))

    def _unlink(self, node_id: str) -> None:
        """Drop the side tables' entries for ``node_id`` (caller holds the lock)."""
        self._filter_metadata.pop(node_id, None)
        old = self._nodes.get(node_id)
        if old is None or old.ref_doc_id is None:
            return
        ids = self._by_ref_doc.get(old.ref_doc_id)
        if ids is not None:
            ids.discard(node_id)
            if not ids:
                del self._by_ref_doc[old.ref_doc_id]

    # ------------------------------------------------------------------ reading

    def get(self, node_id: str) -> BaseNode | None:
        """Return a copy of the indexed node with this id, or ``None``."""
        with self._lock:
            node = self._nodes.get(node_id)
        return None if node is None else _copy_node(node)

    def node_ids(self) -> list[str]:
        """Return the ids of all indexed nodes, in insertion order."""
        with self._lock:
            return list(self._nodes)

    def __len__(self) -> int:
        """Return the number of indexed nodes."""
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        """Return whether a node with this id is indexed."""
        return node_id in self._nodes

    def __repr__(self) -> str:
        """Return a short description: size, directory, and parameters."""
        return f"BM25Index(nodes={len(self)}, persist_dir={self._persist_dir!r}, {self.params})"

    # ------------------------------------------------------------------ querying

    def build(self) -> None:
        """Rebuild the bm25s model now if the index changed since the last build.

        Optional: the next query does it otherwise. Useful to keep a rebuild out of a
        query's latency, or out of a benchmark's timing.
        """
        with self._lock:
            self._current_snapshot()

    def query(
        self,
        query_str: str,
        top_k: int = 10,
        filters: MetadataFilters | None = None,
    ) -> list[NodeWithScore]:
        """Return the ``top_k`` best nodes for ``query_str``, best first, with BM25 scores.

        ``filters`` are applied before ranking (bm25s ``weight_mask``), so ``top_k`` counts
        only nodes that match them. An empty index, an empty query, or a query whose every
        word is a stopword or unknown gives ``[]``.
        """
        return self.batch_query([query_str], top_k=top_k, filters=filters, n_threads=0)[0]

    def batch_query(
        self,
        queries: Sequence[str],
        top_k: int = 10,
        filters: MetadataFilters | None = None,
        n_threads: int = -1,
    ) -> list[list[NodeWithScore]]:
        """Answer many queries at once (bm25s retrieves them in ``n_threads`` threads).

        Returns one list per query, in order, each as :meth:`query` would return it.
        ``n_threads=-1`` uses every CPU, ``0`` runs in the calling thread.
        """
        queries = list(queries)
        results: list[list[NodeWithScore]] = [[] for _ in queries]
        if not queries or top_k <= 0:
            return results
        with self._lock:
            snapshot = self._current_snapshot()
            if snapshot.model is None:
                return results
            tokenized = self._tokenizer.tokenize(
                queries,
                update_vocab=False,
                return_as="ids",
                show_progress=False,
                allow_empty=False,
            )
            mask_and_count = self._mask(snapshot, filters)
        query_ids = [[t for t in ids if t < snapshot.n_vocab] for ids in tokenized]
        active = [i for i, ids in enumerate(query_ids) if ids]
        k = min(top_k, len(snapshot.nodes))
        mask: npt.NDArray[np.float32] | None = None
        if mask_and_count is not None:
            mask, n_matching = mask_and_count
            k = min(k, n_matching)
        if not active or k == 0:
            return results
        documents, scores = snapshot.model.retrieve(
            [query_ids[i] for i in active],
            k=k,
            sorted=True,
            show_progress=False,
            n_threads=n_threads if len(active) > 1 else 0,
            weight_mask=mask,
        )
        for row, query_index in enumerate(active):
            hits = results[query_index]
            for doc, score in zip(documents[row].tolist(), scores[row].tolist(), strict=True):
                if score <= 0.0:
                    break  # sorted: the rest share no term with the query or are masked
                if mask is not None and mask[doc] == 0.0:
                    continue
                hits.append(NodeWithScore(node=_copy_node(snapshot.nodes[doc]), score=score))
        return results

    def _current_snapshot(self) -> _Snapshot:
        """Return the model for the current contents, rebuilding it if stale (lock held)."""
        if self._snapshot is not None and self._snapshot_generation == self._generation:
            return self._snapshot
        node_ids = list(self._nodes)
        nodes = [self._nodes[i] for i in node_ids]
        vocab = dict(self._tokenizer.get_vocab_dict())
        model = None
        if node_ids and vocab:
            # bm25s cannot add to a built model: every change rebuilds it, from the token ids
            # cached at add time (the corpus is not tokenised again).
            model = self._new_model()
            model.index(
                ([self._scored_tokens(i) for i in node_ids], vocab),
                create_empty_token=False,
                show_progress=False,
            )
        self._snapshot = _Snapshot(model=model, node_ids=node_ids, nodes=nodes, n_vocab=len(vocab))
        self._snapshot_generation = self._generation
        return self._snapshot

    def _scored_tokens(self, node_id: str) -> list[int]:
        """The token ids BM25 scores for a node: its own, with its window's (lock held)."""
        own = self._tokens[node_id]
        if not self._window:
            return list(own.tolist())
        node = self._nodes[node_id]
        before: list[npt.NDArray[np.int32]] = []
        after: list[npt.NDArray[np.int32]] = []
        for side, link in ((before, "prev_node"), (after, "next_node")):
            current = node
            for _ in range(self._window):
                related = getattr(current, link)
                neighbour = None if related is None else self._nodes.get(related.node_id)
                if neighbour is None or neighbour.ref_doc_id != node.ref_doc_id:
                    break
                side.append(self._tokens[neighbour.node_id])
                current = neighbour
        # The chunk's own words count twice: a chunk that holds a term outranks the
        # neighbours that only see it through their window.
        return list(np.concatenate([*reversed(before), own, own, *after]).tolist())

    def _new_model(self) -> Any:
        return bm25s.BM25(k1=self._k1, b=self._b, method=self._method, backend="numpy")

    def _mask(
        self, snapshot: _Snapshot, filters: MetadataFilters | None
    ) -> tuple[npt.NDArray[np.float32], int] | None:
        """The 0/1 weight mask of nodes matching ``filters``, cached per build (lock held)."""
        if filters is None or not filters.filters:
            return None
        key = filters.model_dump_json()
        cached = snapshot.masks.get(key)
        if cached is not None:
            snapshot.masks.move_to_end(key)
            return cached
        # One pass over the nodes per distinct filter per build; queries reuse the mask.
        selected = np.fromiter(
            (matches(self._metadata_for_filters(node), filters) for node in snapshot.nodes),
            dtype=bool,
            count=len(snapshot.nodes),
        )
        entry = (selected.astype(np.float32), int(selected.sum()))
        snapshot.masks[key] = entry
        if len(snapshot.masks) > _MASK_CACHE_SIZE:
            snapshot.masks.popitem(last=False)
        return entry

    def _metadata_for_filters(self, node: BaseNode) -> dict[str, Any]:
        """What a filter sees of a node: exactly what LlamaIndex vector stores store.

        ``node_to_metadata_dict`` stores the metadata as JSON values (dates become ISO
        strings, tuples lists) plus ``document_id``, ``doc_id`` and ``ref_doc_id`` set to the
        node's source document id (or ``"None"``), so filters on those keys work here too.
        """
        cached = self._filter_metadata.get(node.node_id)
        if cached is not None:
            return cached
        try:
            metadata: dict[str, Any] = _METADATA_ADAPTER.dump_python(node.metadata, mode="json")
        except Exception:  # an exotic value pydantic cannot serialise: filter on it as is
            metadata = dict(node.metadata)
        ref = node.ref_doc_id or "None"
        metadata.update(document_id=ref, doc_id=ref, ref_doc_id=ref)
        self._filter_metadata[node.node_id] = metadata
        return metadata

    # ------------------------------------------------------------------ persistence

    def persist(self, persist_dir: str | Path | None = None) -> Path:
        """Write the index to ``persist_dir`` (default: the constructor's), atomically.

        A crash or error while writing leaves the previously persisted version live and
        intact. The bm25s model is saved only if it is up to date (a stale one is rebuilt
        on load from the saved token ids), so persisting never forces a rebuild. Returns the
        directory written.
        """
        target = Path(persist_dir) if persist_dir is not None else self._persist_dir
        if target is None:
            raise ValueError("BM25Index.persist needs a persist_dir: none was given to the index")
        with self._lock:
            node_ids = list(self._nodes)
            nodes = [self._nodes[i] for i in node_ids]
            tokens = [self._tokens[i] for i in node_ids]
            vocab = {
                "word_to_stem": dict(self._tokenizer.word_to_stem),
                "stem_to_sid": dict(self._tokenizer.stem_to_sid),
                "word_to_id": dict(self._tokenizer.word_to_id),
            }
            fresh = self._snapshot_generation == self._generation and self._snapshot is not None
            model = self._snapshot.model if fresh and self._snapshot is not None else None
        manifest = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "params": self.params,
            "num_nodes": len(node_ids),
            "has_model": model is not None,
            "bm25s_version": getattr(bm25s, "__version__", None),
        }
        with self._persist_lock:
            _write_version(target, manifest, nodes, tokens, vocab, model)
        return target

    @classmethod
    def load(cls, persist_dir: str | Path) -> BM25Index:
        """Load the index persisted at ``persist_dir``; :meth:`persist` writes back there."""
        root = Path(persist_dir)
        attempts = 3
        for attempt in range(attempts):
            try:
                version = (root / _CURRENT).read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"no BM25 index at {root}: {root / _CURRENT} is missing "
                    "(persist an index there first, or use BM25Index.load_or_create)"
                ) from None
            try:
                return cls._load_version(root, root / version)
            except FileNotFoundError:
                # A writer replaced the version between reading CURRENT and opening it.
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @classmethod
    def load_or_create(cls, persist_dir: str | Path, **params: Any) -> BM25Index:
        """Load the index at ``persist_dir`` if one was persisted there, else create one.

        ``params`` are the constructor's keyword arguments. For a loaded index, a different
        ``k1``, ``b``, ``method`` or ``window`` is applied (the model is rebuilt from the
        saved tokens); a different tokenisation (``stemmer_language``, ``stopwords``,
        ``metadata_mode``) raises ``ValueError``, since the saved tokens would no longer
        match.
        """
        root = Path(persist_dir)
        if not (root / _CURRENT).exists():
            return cls(root, **params)
        index = cls.load(root)
        index._apply_params(params)
        return index

    def _apply_params(self, params: dict[str, Any]) -> None:
        unknown = set(params) - set(self.params)
        if unknown:
            raise TypeError(f"unknown BM25Index parameters: {sorted(unknown)}")
        for name in ("stemmer_language", "metadata_mode"):
            if name in params and params[name] != self.params[name]:
                raise ValueError(
                    f"the BM25 index at {self._persist_dir} was built with "
                    f"{name}={self.params[name]!r}, not {params[name]!r}; "
                    "delete the directory to re-index with the new setting"
                )
        if "stopwords" in params and list(
            _make_tokenizer(None, params["stopwords"]).stopwords
        ) != list(self._tokenizer.stopwords):
            raise ValueError(
                f"the BM25 index at {self._persist_dir} was built with "
                f"stopwords={self._stopwords!r}, not {params['stopwords']!r}; "
                "delete the directory to re-index with the new setting"
            )
        changed = False
        for name in ("k1", "b"):
            if name in params and float(params[name]) != getattr(self, f"_{name}"):
                setattr(self, f"_{name}", float(params[name]))
                changed = True
        if "method" in params and params["method"] != self._method:
            self._method = params["method"]
            changed = True
        if "window" in params and params["window"] != self._window:
            _check_window(params["window"])
            self._window = params["window"]
            changed = True
        if changed:
            with self._lock:
                self._generation += 1

    @classmethod
    def _load_version(cls, root: Path, directory: Path) -> BM25Index:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("format") != _FORMAT or manifest.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{directory} holds {manifest.get('format')!r} version "
                f"{manifest.get('format_version')!r}, not {_FORMAT!r} version {_FORMAT_VERSION}"
            )
        params = manifest["params"]
        index = cls(
            root,
            k1=params["k1"],
            b=params["b"],
            method=params["method"],
            stemmer_language=params["stemmer_language"],
            stopwords=params["stopwords"],
            metadata_mode=MetadataMode(params["metadata_mode"]),
            window=params.get("window", 0),  # absent from indexes written before it existed
        )
        vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        index._tokenizer.word_to_stem = vocab["word_to_stem"]
        index._tokenizer.stem_to_sid = vocab["stem_to_sid"]
        index._tokenizer.word_to_id = vocab["word_to_id"]

        flat = np.load(directory / "tokens.npy", allow_pickle=False)
        offsets = np.load(directory / "offsets.npy", allow_pickle=False).tolist()
        with (directory / "nodes.jsonl").open(encoding="utf-8") as f:
            nodes = [json_to_doc(json.loads(line)) for line in f if line.strip()]
        if len(nodes) != manifest["num_nodes"] or len(offsets) != len(nodes) + 1:
            raise ValueError(f"{directory} is inconsistent: node and token counts differ")
        for position, node in enumerate(nodes):
            node_id = node.node_id
            index._nodes[node_id] = node
            index._tokens[node_id] = flat[offsets[position] : offsets[position + 1]]
            if node.ref_doc_id is not None:
                index._by_ref_doc.setdefault(node.ref_doc_id, set()).add(node_id)
        if manifest["has_model"]:
            model = bm25s.BM25.load(str(directory / "model"), mmap=False, show_progress=False)
            if model.scores["num_docs"] != len(nodes):
                raise ValueError(f"{directory} is inconsistent: the model's size differs")
            index._snapshot = _Snapshot(
                model=model,
                node_ids=list(index._nodes),
                nodes=list(index._nodes.values()),
                n_vocab=len(model.vocab_dict),
            )
            index._snapshot_generation = index._generation
        return index


def _check_window(window: object) -> None:
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise ValueError(f"window={window!r} must be a whole number of chunks, 0 or more")


class BM25Retriever(BaseRetriever):
    """A LlamaIndex retriever over a :class:`BM25Index`.

    Args:
        index: The keyword index to query.
        similarity_top_k: How many nodes to return.
        filters: Metadata filters, applied before ranking.
        callback_manager: LlamaIndex callback manager.
        verbose: LlamaIndex verbosity flag.
    """

    def __init__(
        self,
        index: BM25Index,
        similarity_top_k: int = 10,
        filters: MetadataFilters | None = None,
        *,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        self.index = index
        self.similarity_top_k = similarity_top_k
        self.filters = filters
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.index.query(query_bundle.query_str, self.similarity_top_k, self.filters)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # Scoring is CPU-bound numpy work: run it off the event loop.
        return await asyncio.to_thread(self._retrieve, query_bundle)


# ---------------------------------------------------------------------- helpers


def _make_tokenizer(stemmer_language: str | None, stopwords: StopwordsSpec) -> Tokenizer:
    stemmer = Stemmer.Stemmer(stemmer_language) if stemmer_language is not None else None
    words: str | list[str] | None = (
        stopwords if stopwords is None or isinstance(stopwords, str) else list(stopwords)
    )
    return Tokenizer(lower=True, splitter=_TOKEN_PATTERN, stopwords=words, stemmer=stemmer)


def _copy_node(node: BaseNode) -> BaseNode:
    """A copy a caller may change (text, metadata) without changing the index."""
    return node.model_copy(update={"metadata": dict(node.metadata)})


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _write_nodes(path: Path, nodes: Sequence[BaseNode]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for node in nodes:
            f.write(json.dumps(doc_to_json(node), ensure_ascii=False))
            f.write("\n")


def _write_tokens(directory: Path, tokens: Sequence[npt.NDArray[np.int32]]) -> None:
    offsets = np.zeros(len(tokens) + 1, dtype=np.int64)
    if tokens:
        np.cumsum([len(t) for t in tokens], out=offsets[1:])
        flat = np.concatenate(tokens).astype(np.int32, copy=False)
    else:
        flat = np.zeros(0, dtype=np.int32)
    np.save(directory / "tokens.npy", flat, allow_pickle=False)
    np.save(directory / "offsets.npy", offsets, allow_pickle=False)


def _write_version(
    root: Path,
    manifest: dict[str, Any],
    nodes: Sequence[BaseNode],
    tokens: Sequence[npt.NDArray[np.int32]],
    vocab: dict[str, Any],
    model: Any,
) -> None:
    """Write one complete version under ``root`` and make it live (see module docstring)."""
    root.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    tmp = root / f"{_TMP_PREFIX}{name}"
    version = f"{_VERSION_PREFIX}{name}"
    tmp.mkdir()
    try:
        _write_nodes(tmp / "nodes.jsonl", nodes)
        _write_tokens(tmp, tokens)
        _write_json(tmp / "vocab.json", vocab)
        if model is not None:
            model.save(str(tmp / "model"), show_progress=False)
        _write_json(tmp / "manifest.json", manifest)
        for path in tmp.rglob("*"):
            if path.is_file():
                _fsync_file(path)
        tmp.replace(root / version)  # os.replace
        _fsync_dir(root)
        pointer = root / f"{_TMP_PREFIX}{_CURRENT}-{name}"
        pointer.write_text(version + "\n", encoding="utf-8")
        _fsync_file(pointer)
        pointer.replace(root / _CURRENT)  # os.replace: the commit point
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Older versions and leftovers of interrupted writes are garbage now.
    for entry in root.iterdir():
        if entry.name == version or entry.name == _CURRENT:
            continue
        if entry.name.startswith(_VERSION_PREFIX) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(_TMP_PREFIX):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

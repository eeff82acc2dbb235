"""Which vector store a process uses, from the environment (prefix ``OPENLFR_``), and opening it.

``OPENLFR_VECTOR_STORE`` picks the backend:

* ``edge`` (the default without a URL): Qdrant Edge embedded in the process, HNSW-indexed, a
  few ms a search at 100,000 subjects. The shard lives in ``<OPENLFR_QDRANT_PATH>/<collection>``.
* ``qdrant-local``: qdrant-client's local mode in ``OPENLFR_QDRANT_PATH``; scans every point
  (~135 ms a search at 100,000), for tests and small watchlists.
* ``qdrant`` (the default when ``OPENLFR_QDRANT_URL`` is set): a Qdrant server.

The embedded stores need a folder: a store that vanishes on restart must be asked for, with
``OPENLFR_QDRANT_PATH=:memory:`` (a temporary store, gone on close), never a silent default.
An embedded folder is held by one process at a time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.watchlist.edge_store import EdgeStore
from openlfr.watchlist.qdrant_store import QdrantStore
from openlfr.vision.faces import EMBEDDING_DIM
from openlfr.watchlist.store import VectorStore

#: The embedder whose vectors live in the configured collection itself (as before the slot).
DEFAULT_MODEL_NAME = "dlib_resnet_v1"

logger = logging.getLogger(__name__)

StoreKind = Literal["edge", "qdrant-local", "qdrant"]

#: ``OPENLFR_QDRANT_PATH`` value that asks for a temporary store.
MEMORY = ":memory:"
#: The collection name is a folder name for the edge store: one path component, no dot-names.
_COLLECTION = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


class VectorStoreSettings(BaseSettings):
    """Where the watchlist vectors are (env ``OPENLFR_<NAME>``).

    Attributes:
        vector_store: the backend; None = ``qdrant`` when ``qdrant_url`` is set, else ``edge``.
        qdrant_url: a Qdrant server, e.g. ``http://qdrant:6333`` (``qdrant`` only).
        qdrant_path: folder of an embedded store (``edge``, ``qdrant-local``), or ``:memory:``
            for a temporary one.
        qdrant_api_key: the server's API key (``qdrant`` only).
        qdrant_collection: the server or local-mode collection; the edge store's subfolder.
    """

    model_config = SettingsConfigDict(env_prefix="OPENLFR_", frozen=True, extra="ignore")

    vector_store: StoreKind | None = None
    qdrant_url: str | None = None
    qdrant_path: Path | None = None
    qdrant_api_key: SecretStr | None = None
    qdrant_collection: str = "openlfr_watchlist"

    @field_validator("qdrant_url", "qdrant_path", "qdrant_api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # An exported but empty variable (``OPENLFR_QDRANT_URL=``) means "not set", not "." or "".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("qdrant_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"expected http(s)://host[:port], got {value!r}")
        return value

    @field_validator("qdrant_collection")
    @classmethod
    def _collection(cls, value: str) -> str:
        if not _COLLECTION.match(value):
            raise ValueError(f"expected 1-128 of A-Z a-z 0-9 . _ - (not starting with '.'), got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> VectorStoreSettings:
        url, path = self.qdrant_url is not None, self.qdrant_path is not None
        if self.vector_store is None and url and path:
            raise ValueError(
                "set one of OPENLFR_QDRANT_URL (a server) and OPENLFR_QDRANT_PATH (an embedded store), "
                "or OPENLFR_VECTOR_STORE to say which"
            )
        kind = self.kind
        if kind == "qdrant":
            if not url:
                raise ValueError("OPENLFR_VECTOR_STORE=qdrant needs OPENLFR_QDRANT_URL")
            if path:
                raise ValueError(
                    "OPENLFR_QDRANT_PATH is for an embedded store; unset it with OPENLFR_VECTOR_STORE=qdrant"
                )
            return self
        if not path:
            raise ValueError(
                f"OPENLFR_VECTOR_STORE={kind} needs OPENLFR_QDRANT_PATH: the store's folder, "
                f"or {MEMORY} for a temporary store"
            )
        if url:
            raise ValueError(f"OPENLFR_QDRANT_URL is for a server; unset it with OPENLFR_VECTOR_STORE={kind}")
        if self.qdrant_api_key is not None:
            raise ValueError(f"OPENLFR_QDRANT_API_KEY is for a server; unset it with OPENLFR_VECTOR_STORE={kind}")
        return self

    @property
    def kind(self) -> StoreKind:
        """The backend, with the default resolved."""
        if self.vector_store is not None:
            return self.vector_store
        return "qdrant" if self.qdrant_url is not None else "edge"

    @property
    def temporary(self) -> bool:
        """Whether an embedded store was asked for as temporary (``:memory:``)."""
        return self.qdrant_path is not None and str(self.qdrant_path) == MEMORY


@dataclass(frozen=True, slots=True)
class StoreModel:
    """The embedder a store is opened for: its version (stamped on every entry, and entries of
    another refused) and its vectors' length."""

    model_version: str | None = None
    dim: int = EMBEDDING_DIM

    @property
    def collection_suffix(self) -> str:
        """The default model (``dlib_resnet_v1``) keeps the configured collection's name; any
        other model gets a collection of its own (``<collection>__<model name>``), so a change of
        embedder never mixes vectors (its watchlists are re-embedded into the new collection)."""
        if self.model_version is None:
            return ""
        name = self.model_version.split("@", 1)[0]
        return "" if name == DEFAULT_MODEL_NAME else f"__{name}"


def _open_qdrant(settings: VectorStoreSettings, model: StoreModel) -> VectorStore:
    api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    return QdrantStore(url=settings.qdrant_url, collection=settings.qdrant_collection + model.collection_suffix,
                       api_key=api_key, dim=model.dim, model_version=model.model_version)


def _open_qdrant_local(settings: VectorStoreSettings, model: StoreModel) -> VectorStore:
    collection = settings.qdrant_collection + model.collection_suffix
    if settings.temporary:
        return QdrantStore(location=MEMORY, collection=collection, dim=model.dim, model_version=model.model_version)
    return QdrantStore(path=settings.qdrant_path, collection=collection, dim=model.dim,
                       model_version=model.model_version)


def _open_edge(settings: VectorStoreSettings, model: StoreModel) -> VectorStore:
    if settings.temporary or settings.qdrant_path is None:
        return EdgeStore(dim=model.dim, model_version=model.model_version)
    return EdgeStore(path=settings.qdrant_path / (settings.qdrant_collection + model.collection_suffix),
                     dim=model.dim, model_version=model.model_version)


#: How each backend is opened, by ``OPENLFR_VECTOR_STORE``.
OPENERS: dict[StoreKind, Callable[[VectorStoreSettings, StoreModel], VectorStore]] = {
    "edge": _open_edge,
    "qdrant-local": _open_qdrant_local,
    "qdrant": _open_qdrant,
}


def open_store(settings: VectorStoreSettings, model: StoreModel | None = None) -> VectorStore:
    """Open the configured store for an embedder (creating an embedded one's folder and collection).

    Args:
        settings: which backend, where.
        model: the embedder whose vectors it holds (default: unpinned, 128 values).

    Raises:
        StoreUnavailable: the server cannot be reached, or the folder is held by another process.
        CollectionMismatch: the collection or shard holds vectors of another size or distance.
    """
    model = model or StoreModel()
    store = OPENERS[settings.kind](settings, model)
    where = settings.qdrant_url or settings.qdrant_path
    logger.info(
        'opened vector store kind="%s" where="%s" collection="%s" model="%s" dim="%d"', settings.kind, where,
        settings.qdrant_collection + model.collection_suffix, model.model_version, model.dim,
    )
    return store

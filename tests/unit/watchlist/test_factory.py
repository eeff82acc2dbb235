"""Choosing and opening the vector store from OPENLFR_* settings; bad combinations name the setting."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from openlfr.service.settings import EXIT_BAD_SETTINGS, load_settings
from openlfr.watchlist.edge_store import EdgeStore
from openlfr.watchlist.exceptions import StoreUnavailable
from openlfr.watchlist.factory import VectorStoreSettings, open_store
from openlfr.watchlist.qdrant_store import QdrantStore

NAMES = ("VECTOR_STORE", "QDRANT_URL", "QDRANT_PATH", "QDRANT_API_KEY", "QDRANT_COLLECTION")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(f"OPENLFR_{name}", raising=False)


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"OPENLFR_{name.upper()}", value)


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({"qdrant_path": "/data/wl"}, "edge"),
        ({"qdrant_url": "http://qdrant:6333"}, "qdrant"),
        ({"qdrant_url": "https://qdrant.example:6333", "qdrant_api_key": "k"}, "qdrant"),
        ({"vector_store": "qdrant-local", "qdrant_path": "/data/wl"}, "qdrant-local"),
        ({"vector_store": "edge", "qdrant_path": ":memory:"}, "edge"),
        ({"qdrant_path": "/data/wl", "qdrant_url": ""}, "edge"),  # exported but empty = unset
    ],
)
def test_the_backend_follows_the_settings(monkeypatch: pytest.MonkeyPatch, env, kind) -> None:
    _env(monkeypatch, **env)
    assert VectorStoreSettings().kind == kind


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "OPENLFR_QDRANT_PATH"),  # edge by default, and it needs a folder
        ({"vector_store": "edge"}, "OPENLFR_QDRANT_PATH"),
        ({"vector_store": "qdrant-local", "qdrant_path": ""}, "OPENLFR_QDRANT_PATH"),
        ({"vector_store": "qdrant"}, "OPENLFR_QDRANT_URL"),
        ({"vector_store": "qdrant", "qdrant_url": "http://q:6333", "qdrant_path": "/x"}, "OPENLFR_QDRANT_PATH"),
        ({"vector_store": "edge", "qdrant_path": "/x", "qdrant_url": "http://q:6333"}, "OPENLFR_QDRANT_URL"),
        ({"qdrant_path": "/x", "qdrant_url": "http://q:6333"}, "OPENLFR_VECTOR_STORE"),
        ({"qdrant_path": "/x", "qdrant_api_key": "secret"}, "OPENLFR_QDRANT_API_KEY"),
        ({"vector_store": "faiss", "qdrant_path": "/x"}, "OPENLFR_VECTOR_STORE"),
        ({"qdrant_url": "qdrant:6333"}, "OPENLFR_QDRANT_URL"),
        ({"qdrant_path": "/x", "qdrant_collection": "../escape"}, "OPENLFR_QDRANT_COLLECTION"),
        ({"qdrant_path": "/x", "qdrant_collection": ""}, "OPENLFR_QDRANT_COLLECTION"),
    ],
)
def test_bad_combinations_stop_the_process_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env, named
) -> None:
    _env(monkeypatch, **env)
    with pytest.raises(ValidationError):
        VectorStoreSettings()
    with pytest.raises(SystemExit) as stop:
        load_settings(VectorStoreSettings)  # type: ignore[type-var]
    assert stop.value.code == EXIT_BAD_SETTINGS
    err = capsys.readouterr().err
    assert named in err, err
    assert "secret" not in err


def test_the_api_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, qdrant_url="http://q:6333", qdrant_api_key="hunter2")
    settings = VectorStoreSettings()
    assert "hunter2" not in repr(settings) and settings.qdrant_api_key.get_secret_value() == "hunter2"


def test_edge_opens_a_shard_in_the_collection_subfolder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _env(monkeypatch, qdrant_path=str(tmp_path), qdrant_collection="wl-main")
    store = open_store(VectorStoreSettings())
    try:
        assert isinstance(store, EdgeStore) and store.path == tmp_path / "wl-main"
        assert store.ready() == (True, "ok")
    finally:
        store.close()
    assert (tmp_path / "wl-main" / "edge_config.json").is_file()


def test_a_temporary_edge_store_is_asked_for_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, qdrant_path=":memory:")
    store = open_store(VectorStoreSettings())
    assert isinstance(store, EdgeStore) and store.path.is_dir()
    store.close()
    assert not store.path.exists()


@pytest.mark.parametrize("path", ["folder", ":memory:"])
def test_qdrant_local_opens_in_the_folder_or_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, path: str) -> None:
    _env(monkeypatch, vector_store="qdrant-local", qdrant_path=str(tmp_path / path) if path == "folder" else path)
    store = open_store(VectorStoreSettings())
    try:
        assert isinstance(store, QdrantStore) and store.collection == "openlfr_watchlist"
        assert store.ready() == (True, "ok")
    finally:
        store.close()
    assert os.path.isdir(tmp_path / "folder") is (path == "folder")


def test_an_unreachable_server_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _env(monkeypatch, qdrant_url=f"http://127.0.0.1:{port}")
    with pytest.raises(StoreUnavailable):
        open_store(VectorStoreSettings())


def test_another_embedder_gets_a_collection_of_its_own(tmp_path: Path) -> None:
    from openlfr.watchlist.factory import StoreModel

    settings = VectorStoreSettings(vector_store="qdrant-local", qdrant_path=tmp_path / "q")
    default = open_store(settings, StoreModel("dlib_resnet_v1@abc", 128))
    try:
        assert default.collection == settings.qdrant_collection and default.model_version == "dlib_resnet_v1@abc"
    finally:
        default.close()  # a local folder has one client at a time
    other = open_store(settings, StoreModel("faceres_v1@def", 1024))
    try:
        assert other.collection == settings.qdrant_collection + "__faceres_v1" and other.dim == 1024
    finally:
        other.close()
    edge = open_store(VectorStoreSettings(vector_store="edge", qdrant_path=tmp_path / "e"), StoreModel("faceres_v1@def", 1024))
    try:
        assert edge.dim == 1024 and (tmp_path / "e" / (settings.qdrant_collection + "__faceres_v1")).is_dir()
    finally:
        edge.close()

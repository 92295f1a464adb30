"""Verified downloads against a real HTTP server on the loopback interface (no mocked transport)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from velvet.hub import (
    ChecksumError,
    DownloadError,
    OfflineError,
    PretrainedEntry,
    cache_root,
    download_pretrained,
    is_offline,
    register_pretrained,
)
from velvet.hub import registry as registry_module

_HF_PATH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")


@dataclass
class FileServer:
    """A loopback HTTP server over ``root``; ``requests`` lists every path asked for."""

    root: Path
    server: ThreadingHTTPServer
    requests: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(state: dict[str, FileServer]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fs = state["fs"]
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            fs.requests.append(path)
            hf = _HF_PATH.match(path)
            # Hub-style /{repo}/resolve/{revision}/{file} lives under hf/; anything else is a plain path
            rel = f"hf/{hf['repo']}/{hf['revision']}/{hf['file']}" if hf else path.lstrip("/")
            target = fs.root / rel
            if ".." in Path(rel).parts or not target.is_file():
                self.send_error(404, "not found")
                return
            body = target.read_bytes()
            self.send_response(200)
            # under truncated/ the server promises more bytes than it sends, then hangs up
            extra = 100 if rel.startswith("truncated/") else 0
            self.send_header("Content-Length", str(len(body) + extra))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

    return Handler


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    state: dict[str, FileServer] = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state["fs"] = fs = FileServer(root=tmp_path / "served", server=server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield fs
    if thread.is_alive():
        fs.stop()


@pytest.fixture(autouse=True)
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache, online mode, and a registry copy that the test may extend."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("VELVET_CACHE", str(cache))
    monkeypatch.delenv("VELVET_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # tests/conftest.py sets it for every test
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    return cache


def _pretrained_files() -> dict[str, bytes]:
    """A small pretrained directory's files: a safetensors file, a config and a tokenizer file."""
    weights = {
        "proj.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
        "proj.bias": np.ones(3, np.float32),
    }
    return {
        "config.json": json.dumps({"format": "velvet-pretrained", "kind": "vision"}).encode(),
        "model.safetensors": save(weights),
        "tokenizer/vocab.txt": b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nliver\n",
    }


def _publish(fs: FileServer, prefix: str, files: dict[str, bytes]) -> dict[str, str]:
    """Write ``files`` under ``prefix`` on the server; returns their sha256."""
    for name, data in files.items():
        path = fs.root / prefix / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def _url_entry(fs: FileServer, name: str = "velvet-tiny.test") -> tuple[PretrainedEntry, dict[str, bytes]]:
    files = _pretrained_files()
    hashes = _publish(fs, "weights/v1", files)
    entry = PretrainedEntry(
        name=name, arch=name.split(".")[0], files=hashes, base_url=f"{fs.url}/weights/v1/"
    )
    return register_pretrained(entry), files


def _leftovers(folder: Path) -> list[Path]:
    """Temporary files left in the cache: every temporary name is hidden (``.tmp-*``)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.startswith("."))


def test_fresh_download_verifies_and_caches(file_server: FileServer, hub_env: Path) -> None:
    entry, files = _url_entry(file_server)
    folder = download_pretrained(entry.name)
    assert folder == hub_env / "pretrained" / entry.name
    for name, data in files.items():
        assert (folder / name).read_bytes() == data
    assert sorted(file_server.requests) == sorted(f"/weights/v1/{n}" for n in files)
    assert _leftovers(hub_env) == []


def test_second_call_uses_cache_without_http(file_server: FileServer) -> None:
    entry, _ = _url_entry(file_server)
    first = download_pretrained(entry.name)
    count = len(file_server.requests)
    assert download_pretrained(entry.name) == first
    assert len(file_server.requests) == count


def test_corrupt_cache_is_refetched_online(file_server: FileServer) -> None:
    entry, files = _url_entry(file_server)
    folder = download_pretrained(entry.name)
    (folder / "model.safetensors").write_bytes(b"bit rot")
    count = len(file_server.requests)
    download_pretrained(entry.name)
    assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert file_server.requests[count:] == ["/weights/v1/model.safetensors"]


def test_corrupt_cache_offline_raises_and_deletes(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry, _ = _url_entry(file_server)
    folder = download_pretrained(entry.name)
    bad = folder / "tokenizer" / "vocab.txt"
    bad.write_bytes(b"tampered")
    monkeypatch.setenv("VELVET_OFFLINE", "1")
    count = len(file_server.requests)
    with pytest.raises(ChecksumError) as info:
        download_pretrained(entry.name)
    message = str(info.value)
    assert str(bad) in message and entry.files["tokenizer/vocab.txt"] in message
    assert hashlib.sha256(b"tampered").hexdigest() in message
    assert not bad.exists()
    assert len(file_server.requests) == count


def test_tampered_download_raises_and_leaves_nothing(file_server: FileServer, hub_env: Path) -> None:
    entry, _ = _url_entry(file_server)
    (file_server.root / "weights" / "v1" / "model.safetensors").write_bytes(b"evil weights")
    with pytest.raises(ChecksumError, match="sha256 mismatch") as info:
        download_pretrained(entry.name)
    assert entry.files["model.safetensors"] in str(info.value)
    folder = hub_env / "pretrained" / entry.name
    assert not (folder / "model.safetensors").exists()
    assert [p.name for p in folder.iterdir() if p.is_file()] == ["config.json"]  # no temp file either


@pytest.mark.parametrize(
    ("var", "value"), [("VELVET_OFFLINE", "1"), ("HF_HUB_OFFLINE", "true"), ("VELVET_OFFLINE", "ON")]
)
def test_offline_after_server_is_gone(
    file_server: FileServer, hub_env: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    warm, _ = _url_entry(file_server, "velvet-tiny.warm")
    cold, _ = _url_entry(file_server, "velvet-tiny.cold")
    download_pretrained(warm.name)
    count = len(file_server.requests)
    file_server.stop()
    # online, the cold entry needs the (now gone) server and fails: offline mode must not try
    with pytest.raises(DownloadError, match=re.escape(f"{file_server.url}/weights/v1/config.json")):
        download_pretrained(cold.name)
    monkeypatch.setenv(var, value)
    assert is_offline()
    assert (download_pretrained(warm.name) / "model.safetensors").is_file()
    with pytest.raises(
        OfflineError, match=re.escape(str(hub_env / "pretrained" / cold.name / "config.json"))
    ):
        download_pretrained(cold.name)
    assert len(file_server.requests) == count


def test_hf_source_through_hf_endpoint(file_server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _pretrained_files()
    hashes = _publish(file_server, "hf/velvet-test/tiny/v1", files)
    entry = PretrainedEntry(
        name="velvet-tiny.hf", arch="velvet-tiny", files=hashes, hf_repo="velvet-test/tiny", revision="v1"
    )
    register_pretrained(entry)
    # huggingface_hub reads HF_ENDPOINT at import; velvet passes the current value on each call
    monkeypatch.setenv("HF_ENDPOINT", file_server.url + "/")
    folder = download_pretrained(entry.name)
    assert (folder / "tokenizer" / "vocab.txt").read_bytes() == files["tokenizer/vocab.txt"]
    assert sorted(file_server.requests) == sorted(f"/velvet-test/tiny/resolve/v1/{n}" for n in files)


def test_http_404_names_the_url(file_server: FileServer, hub_env: Path) -> None:
    hashes = {"config.json": "0" * 64, "model.safetensors": "1" * 64}
    entry = register_pretrained(
        PretrainedEntry(
            name="velvet-tiny.gone", arch="velvet-tiny", files=hashes, base_url=f"{file_server.url}/nothing"
        )
    )
    with pytest.raises(DownloadError, match=re.escape(f"{file_server.url}/nothing/config.json: HTTP 404")):
        download_pretrained(entry.name)
    assert _leftovers(hub_env) == []


def test_truncated_transfer_is_refused(file_server: FileServer, hub_env: Path) -> None:
    hashes = _publish(file_server, "truncated", _pretrained_files())
    entry = PretrainedEntry(
        name="velvet-tiny.cut", arch="velvet-tiny", files=hashes, base_url=f"{file_server.url}/truncated"
    )
    register_pretrained(entry)
    with pytest.raises(DownloadError, match=re.escape(f"{file_server.url}/truncated/config.json")):
        download_pretrained(entry.name)
    assert not (hub_env / "pretrained" / entry.name / "config.json").exists()
    assert _leftovers(hub_env) == []


def test_interrupted_download_leaves_nothing(
    file_server: FileServer, hub_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from velvet.hub import download as download_module

    entry, _ = _url_entry(file_server)
    real_read, reads = download_module._read, []

    def read(response: object, url: str) -> bytes:
        reads.append(url)
        if len(reads) == 2:  # Ctrl-C after the first chunk reached the temporary file
            raise KeyboardInterrupt
        return real_read(response, url)

    monkeypatch.setattr(download_module, "_read", read)
    with pytest.raises(KeyboardInterrupt):
        download_pretrained(entry.name)
    assert not (hub_env / "pretrained" / entry.name / "config.json").exists()
    assert _leftovers(hub_env) == []


def test_concurrent_downloads_agree(file_server: FileServer, hub_env: Path) -> None:
    entry, files = _url_entry(file_server)
    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(lambda _: download_pretrained(entry.name, progress=False), range(4)))
    assert len(set(folders)) == 1
    assert (folders[0] / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert _leftovers(hub_env) == []


def test_cache_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_root() == tmp_path / "cache"
    monkeypatch.delenv("VELVET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "velvet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "velvet"


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("yes", True), ("0", False), ("", False), ("no", False)]
)
def test_offline_switch_values(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("VELVET_OFFLINE", value)
    assert is_offline() is expected


def test_load_pretrained_end_to_end_with_a_real_model(file_server: FileServer, hub_env: Path) -> None:
    """A saved model published on the server loads through the registry and gives the same output."""
    import torch

    import velvet
    from velvet.models.pretrained import save_pretrained
    from velvet.models.vision.factory import create_vision_encoder

    torch.manual_seed(0)
    encoder = create_vision_encoder("swin-tiny").eval()
    local = save_pretrained(encoder, hub_env.parent / "export", preprocess="ct_rate")
    files = {str(p.relative_to(local)): p.read_bytes() for p in sorted(local.rglob("*")) if p.is_file()}
    hashes = _publish(file_server, "models/swin", files)
    register_pretrained(
        PretrainedEntry(name="swin-tiny.e2e", arch="swin-tiny", files=hashes, base_url=f"{file_server.url}/models/swin")
    )
    loaded = velvet.load_pretrained("swin-tiny.e2e")
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x)["pooled"], encoder(x)["pooled"])
    assert loaded.preprocess.name == "ct_rate"
    # the velvet.models entry point resolves registered names too, from the cache (no new request)
    before = len(file_server.requests)
    from velvet.models.pretrained import from_pretrained

    assert isinstance(from_pretrained("swin-tiny.e2e"), type(encoder))
    assert len(file_server.requests) == before

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.data import (
    DataError,
    augment,
    load_dataset,
    read_idx,
    split_validation,
    write_idx,
)


@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
def test_idx_round_trip(tmp_path: Path, name: str) -> None:
    a = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    write_idx(tmp_path / name, a)
    b = read_idx(tmp_path / name)
    assert b.dtype == np.uint8 and b.shape == (5, 4, 3)
    np.testing.assert_array_equal(a, b)


def test_idx_reader_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04hello"))
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad.gz")
    short = bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 3
    (tmp_path / "short.idx").write_bytes(short)
    with pytest.raises(DataError, match="expected 10 values, found 3"):
        read_idx(tmp_path / "short.idx")


def test_idx_dataset_from_a_folder(tiny_idx_dir: Path) -> None:
    ds = load_dataset("mnist", tiny_idx_dir, allow_download=False)
    assert ds.train_x.shape == (3000, 28, 28, 1) and ds.test_x.shape == (1000, 28, 28, 1)
    assert ds.mode == "L" and ds.background == "dark" and not ds.flip  # digits are not flipped
    assert set(np.unique(ds.train_y)) <= set(range(10))


def test_missing_data_names_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", tmp_path / "nowhere", allow_download=False)
    assert "apt-get install -y dataset-fashion-mnist" in str(e.value)
    assert "--data-dir" in str(e.value)


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown data set 'imagenet'"):
        load_dataset("imagenet")


def _write_folder(root: Path, rgb: bool) -> None:
    rng = np.random.default_rng(1)
    for c, label in enumerate(["cat", "dog", "fish"]):
        (root / label).mkdir(parents=True)
        for i in range(6):
            base = np.full((20, 24, 3), 40 * (c + 1), np.uint8)
            noise = rng.integers(0, 30, base.shape, dtype=np.uint8)
            img = Image.fromarray(base + noise) if rgb else Image.fromarray((base + noise)[..., 0])
            img.save(root / label / f"{i}.{'jpg' if i % 2 else 'png'}")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "dog" / "notes.txt").write_text("not an image, ignored by suffix")


@pytest.mark.parametrize("rgb", [False, True])
def test_folder_dataset_skips_corrupt_files(tmp_path: Path, rgb: bool) -> None:
    _write_folder(tmp_path, rgb)
    ds = load_dataset(f"folder:{tmp_path}", image_size=16)
    assert ds.labels == ["cat", "dog", "fish"]
    assert ds.mode == ("RGB" if rgb else "L")
    assert ds.train_x.shape[1:] == (16, 16, 3 if rgb else 1)
    assert len(ds.train_x) + len(ds.test_x) == 18
    assert len(ds.skipped) == 1 and "broken.png" in ds.skipped[0]


def test_validation_split_is_disjoint_and_seeded() -> None:
    x = np.arange(1000).reshape(1000, 1, 1, 1)
    y = np.arange(1000)
    tx, ty, vx, vy = split_validation(x, y, 100, seed=3)
    assert len(vx) == 100 and len(tx) == 900
    assert not set(vy) & set(ty)
    assert np.array_equal(vy, split_validation(x, y, 100, seed=3)[3])


def test_augment_crops_and_flips_deterministically() -> None:
    batch = torch.arange(2 * 4 * 4, dtype=torch.uint8).reshape(2, 4, 4, 1)
    assert torch.equal(augment(batch, 0, False, torch.Generator().manual_seed(0)), batch)
    a = augment(batch, 1, True, torch.Generator().manual_seed(5))
    b = augment(batch, 1, True, torch.Generator().manual_seed(5))
    assert a.shape == batch.shape and torch.equal(a, b)
    # every output row is a (possibly flipped) shifted window of the zero-padded input
    padded = torch.nn.functional.pad(batch, (0, 0, 1, 1, 1, 1))
    windows = {
        padded[n, dy : dy + 4, dx : dx + 4].flip(f).numpy().tobytes()
        for n in range(2)
        for dy in range(3)
        for dx in range(3)
        for f in ([], [1])
    }
    assert all(a[n].numpy().tobytes() in windows for n in range(2))


def _serve(folder: Path):
    """A real HTTP server on loopback serving `folder` (the download path without the internet)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_verifies_checksums(tiny_idx_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from training import data

    server = _serve(tiny_idx_dir)
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        sums = {f.name: data.md5sum(f) for f in tiny_idx_dir.iterdir()}
        monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
        monkeypatch.setitem(data.IDX_SOURCES, "mnist", (url, sums))
        ds = load_dataset("mnist")
        assert ds.train_x.shape == (3000, 28, 28, 1)
        assert ds.source == str(tmp_path / "cache" / "mnist")
        # a corrupted download is refused and not left in the cache
        bad = dict(sums, **{"t10k-labels-idx1-ubyte.gz": "0" * 32})
        monkeypatch.setitem(data.IDX_SOURCES, "mnist", (url, bad))
        monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache2")
        with pytest.raises(DataError, match="checksum mismatch"):
            load_dataset("mnist")
        assert not (tmp_path / "cache2" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    finally:
        server.shutdown()
        server.server_close()


def test_offline_download_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    from training import data

    monkeypatch.setattr(data, "CACHE_DIR", tmp_path)
    monkeypatch.setitem(data.IDX_SOURCES, "mnist", ("http://127.0.0.1:9/", {"x.gz": "0"}))
    with pytest.raises(DataError, match=r"mnist: not on disk and cannot download .*--data-dir"):
        load_dataset("mnist")


def test_cifar10_reader_on_a_generated_archive(tmp_path: Path) -> None:
    import pickle
    import tarfile

    rng = np.random.default_rng(0)
    src = tmp_path / "src" / "cifar-10-batches-py"
    src.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, 4))}  # fmt: skip
        (src / name).write_bytes(pickle.dumps(batch))
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path, allow_download=False)
    assert ds.mode == "RGB" and ds.train_x.shape == (20, 32, 32, 3) and ds.test_x.shape[0] == 4
    first = pickle.loads((src / "data_batch_1").read_bytes())[b"data"][0]
    np.testing.assert_array_equal(ds.train_x[0, :, :, 0].ravel(), first[:1024])  # red plane

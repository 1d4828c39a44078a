"""Data sets as uint8 NHWC arrays: IDX (MNIST family), CIFAR-10, image folders; splits; augment.

Everything stays uint8 until a batch is drawn: scaling and normalisation live in the network's
serving wrapper (export.py) and in ``to_input`` here, from the same mean/std.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import struct
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("training.data")

DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_DIR = Path(os.environ.get("CONVSCOPE_DATA_CACHE", Path.home() / ".cache" / "convscope"))

FASHION_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
CIFAR10_LABELS = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
# Official files and their MD5 checksums (the same ones torchvision verifies).
IDX_SOURCES = {
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83fd310",
        },
    ),
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class DataError(RuntimeError):
    """A data set that cannot be found or read; the message says what to install or pass."""


@dataclass
class DataSet:
    name: str
    labels: list[str]
    mode: str  # "L" or "RGB"
    train_x: np.ndarray  # uint8 [N, H, W, C]
    train_y: np.ndarray  # int64 [N]
    test_x: np.ndarray
    test_y: np.ndarray
    flip: bool = True  # horizontal flips keep the label (not for digits)
    background: str | None = None  # "dark" when objects are light on black (MNIST family)
    source: str = ""
    skipped: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


# ---------------------------------------------------------------- IDX


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x0000 <dtype> <ndim>, big-endian sizes."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise DataError(f"{path}: unknown IDX data type 0x{data[2]:02x}")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise DataError(f"{path}: expected {int(np.prod(dims))} values, found {array.size}")
    return array.reshape(dims).astype(array.dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """The inverse of read_idx (uint8 only); used by tests and tools that make small data sets."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str) -> Path:
    """Download into the cache once, verifying the checksum; a bad file is removed, never used."""
    if dest.exists() and md5sum(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot download {url} ({e})") from e
    if (got := md5sum(tmp)) != md5:
        tmp.unlink()
        raise DataError(f"{url}: checksum mismatch (got {got}, expected {md5})")
    tmp.replace(dest)
    return dest


def load_idx_dataset(name: str, data_dir: Path | None, allow_download: bool = True) -> DataSet:
    base_url, checksums = IDX_SOURCES[name]
    candidates = [data_dir] if data_dir else []
    if name == "fashion-mnist" and not data_dir:
        candidates.append(DEFAULT_FASHION_DIR)
    candidates.append(CACHE_DIR / name)
    found = next((d for d in candidates if all((d / f).exists() for f in IDX_FILES.values())), None)
    if found is None:
        if not allow_download or data_dir:
            hint = (
                "apt-get install -y dataset-fashion-mnist, or " if name == "fashion-mnist" else ""
            )
            where = data_dir or " or ".join(str(c) for c in candidates)
            raise DataError(f"{name}: IDX files not found in {where}; {hint}pass --data-dir DIR")
        found = CACHE_DIR / name
        try:
            for fname, md5 in checksums.items():
                download(base_url + fname, found / fname, md5)
        except DataError as e:
            hint = "apt-get install -y dataset-fashion-mnist or " if name == "fashion-mnist" else ""
            raise DataError(f"{name}: not on disk and {e}; {hint}pass --data-dir DIR") from e
    arrays = {k: read_idx(found / f) for k, f in IDX_FILES.items()}
    labels = FASHION_LABELS if name == "fashion-mnist" else [str(i) for i in range(10)]
    return DataSet(
        name=name,
        labels=labels,
        mode="L",
        train_x=arrays["train_x"][..., None],
        train_y=arrays["train_y"].astype(np.int64),
        test_x=arrays["test_x"][..., None],
        test_y=arrays["test_y"].astype(np.int64),
        flip=name == "fashion-mnist",
        background="dark",
        source=str(found),
    )


# ---------------------------------------------------------------- CIFAR-10


def load_cifar10(data_dir: Path | None, allow_download: bool = True) -> DataSet:
    root = data_dir or CACHE_DIR / "cifar10"
    archive = root / "cifar-10-python.tar.gz"
    folder = root / "cifar-10-batches-py"
    if not folder.exists():
        if not archive.exists():
            if not allow_download:
                raise DataError(f"cifar10: {archive} not found; pass --data-dir DIR")
            download(CIFAR10_URL, archive, CIFAR10_MD5)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")

    def batch(fname: str) -> tuple[np.ndarray, np.ndarray]:
        with open(folder / fname, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x), np.asarray(d[b"labels"], dtype=np.int64)

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = batch("test_batch")
    return DataSet(
        name="cifar10",
        labels=CIFAR10_LABELS,
        mode="RGB",
        train_x=np.concatenate([p[0] for p in parts]),
        train_y=np.concatenate([p[1] for p in parts]),
        test_x=test_x,
        test_y=test_y,
        source=str(folder),
    )


# ---------------------------------------------------------------- image folders


def load_folder(
    path: Path, size: int, mode: str | None = None, test_fraction: float = 0.2, seed: int = 0
) -> DataSet:
    """One subfolder per class; every common image file; unreadable files skipped with a warning."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_dir():
        raise DataError(f"folder data set {path} is not a directory")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"folder data set {path} needs at least two class subfolders")
    files = [
        (f, i)
        for i, c in enumerate(classes)
        for f in sorted((path / c).rglob("*"))
        if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
    ]
    images, targets, skipped = [], [], []
    rgb_seen = False
    for f, label in files:
        try:
            with Image.open(f) as im:
                im.load()
                rgb_seen |= im.mode not in ("L", "LA", "1", "I", "I;16", "F")
                images.append(im.copy())
                targets.append(label)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            skipped.append(f"{f}: {e}")
    if skipped:
        log.warning("skipped %d unreadable file(s) in %s, e.g. %s", len(skipped), path, skipped[0])
    if not images:
        raise DataError(f"folder data set {path} has no readable images")
    mode = mode or ("RGB" if rgb_seen else "L")
    arrays = []
    for im in images:
        im = im.convert("RGBA").convert(mode) if im.mode in ("P", "PA") else im.convert(mode)
        arrays.append(np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), np.uint8))
    x = np.stack(arrays)
    if x.ndim == 3:
        x = x[..., None]
    y = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = max(1, round(len(x) * test_fraction)) if len(x) > 4 else 0
    test, train = order[:n_test], order[n_test:]
    return DataSet(
        name=f"folder:{path}",
        labels=classes,
        mode=mode,
        train_x=x[train],
        train_y=y[train],
        test_x=x[test],
        test_y=y[test],
        source=str(path),
        skipped=skipped,
    )


def load_dataset(
    name: str, data_dir: str | Path | None = None, image_size: int = 28, allow_download: bool = True
) -> DataSet:
    data_dir = Path(data_dir) if data_dir else None
    if name in IDX_SOURCES:
        return load_idx_dataset(name, data_dir, allow_download)
    if name == "cifar10":
        return load_cifar10(data_dir, allow_download)
    if name.startswith("folder:"):
        return load_folder(Path(name.removeprefix("folder:")), image_size)
    raise DataError(f"unknown data set {name!r}: fashion-mnist, mnist, cifar10 or folder:PATH")


def split_validation(
    x: np.ndarray, y: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out a fixed, seeded validation split of the training set."""
    order = np.random.default_rng(seed).permutation(len(x))
    val_size = min(val_size, len(x) // 5)
    val, train = order[:val_size], order[val_size:]
    return x[train], y[train], x[val], y[val]


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the [0, 1] scale."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
    return flat.mean(0).round(4).tolist(), flat.std(0).round(4).tolist()


# ---------------------------------------------------------------- batches


def to_input(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW (the same arithmetic as the exported graph)."""
    x = batch.permute(0, 3, 1, 2).float() / 255.0
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def augment(batch: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and optional horizontal flip, on a uint8 NHWC batch."""
    n, h, w, _ = batch.shape
    if pad:
        padded = torch.nn.functional.pad(batch, (0, 0, pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h))[:, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, :]
        batch = padded[torch.arange(n)[:, None, None], rows, cols]
    if flip:
        mask = torch.rand(n, generator=gen) < 0.5
        batch = torch.where(mask[:, None, None, None], batch.flip(2), batch)
    return batch

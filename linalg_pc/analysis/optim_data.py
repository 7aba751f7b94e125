"""Offline data of the optimizer study: scikit-learn's bundled digits and a byte corpus of the
Python standard library's own source files.

Nothing is downloaded. :func:`digits` reads the 8×8 handwritten digits that ship inside the
scikit-learn wheel (1797 images, 10 classes; Alpaydin & Kaynak, UCI "Optical Recognition of
Handwritten Digits"); :func:`stdlib_corpus` concatenates a fixed, sorted list of the ``.py``
files found directly in ``sysconfig.get_paths()["stdlib"]`` (the standard library of the running
interpreter: it differs slightly between Python versions, so the corpus records its files, byte
counts and a SHA-256 of its text). Both return NumPy arrays; no PyTorch here.
"""

from __future__ import annotations

import hashlib
import pathlib
import platform
import sysconfig

import numpy as np

__all__ = ["digits", "stdlib_corpus"]


def digits(*, val_fraction: float = 0.2, split_seed: int = 0) -> dict:
    """The digits data set, standardized, split deterministically into train and validation.

    Parameters
    ----------
    val_fraction : float
        Share of the 1797 images held out for validation (default 0.2), in (0, 1).
    split_seed : int
        Seed of the permutation that makes the split (fixed by the study: the split does not
        move with the training seed).

    Returns
    -------
    dict
        ``x_train``, ``y_train``, ``x_val``, ``y_val`` (float32 features scaled by the training
        mean and standard deviation, int64 labels) and ``info`` (sizes, source).
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("the digits task needs scikit-learn: pip install "
                          "'linalg_pc[study]'") from exc
    data = load_digits()
    x = np.asarray(data.data, dtype=np.float64)
    y = np.asarray(data.target, dtype=np.int64)
    perm = np.random.default_rng(split_seed).permutation(len(y))
    n_val = int(round(val_fraction * len(y)))
    val, train = perm[:n_val], perm[n_val:]
    mu = x[train].mean(axis=0)
    sd = x[train].std(axis=0) + 1.0  # + 1: constant border pixels (sd 0) stay finite
    f = ((x - mu) / sd).astype(np.float32)
    return {"x_train": f[train], "y_train": y[train], "x_val": f[val], "y_val": y[val],
            "info": {"source": "sklearn.datasets.load_digits", "n_train": int(len(train)),
                     "n_val": int(len(val)), "features": int(x.shape[1]), "classes": 10}}


def stdlib_corpus(*, max_files: int | None = None, max_bytes: int | None = None,
                  val_every: int = 10) -> dict:
    """A byte corpus from the standard library's top-level ``.py`` files.

    The files directly in the stdlib folder are sorted by name; every ``val_every``-th file
    (index ≡ val_every − 1) goes to validation, the others to training. Files are read as bytes
    and separated by a NUL byte; ``max_files`` keeps the first files of the sorted list, and
    ``max_bytes`` stops each split once it holds that many bytes.

    Returns
    -------
    dict
        ``train`` and ``val`` (uint8 arrays: the byte vocabulary is 0..255) and ``info``: the
        Python version, the stdlib folder, the files of each split, their byte counts and the
        SHA-256 of the two texts.
    """
    if int(val_every) < 2:
        raise ValueError(f"val_every must be an integer >= 2, got {val_every!r}")
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if max_files is not None:
        files = files[:int(max_files)]
    if len(files) < val_every:
        raise RuntimeError(f"found {len(files)} .py files in {root}: too few for a corpus")
    parts: dict[str, list[bytes]] = {"train": [], "val": []}
    names: dict[str, list[str]] = {"train": [], "val": []}
    for i, p in enumerate(files):
        split = "val" if i % val_every == val_every - 1 else "train"
        if max_bytes is not None and sum(map(len, parts[split])) >= max_bytes:
            continue
        parts[split].append(p.read_bytes() + b"\0")
        names[split].append(p.name)
    out: dict = {}
    info: dict = {"python": platform.python_version(), "stdlib": str(root), "val_every": val_every}
    for split in ("train", "val"):
        text = b"".join(parts[split])
        if max_bytes is not None:
            text = text[:max_bytes]
        out[split] = np.frombuffer(text, dtype=np.uint8).copy()
        info[f"{split}_files"] = names[split]
        info[f"{split}_bytes"] = len(text)
        info[f"{split}_sha256"] = hashlib.sha256(text).hexdigest()
    out["info"] = info
    return out

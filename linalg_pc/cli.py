"""The ``linalg-pc`` command.

``linalg-pc study [NAME ...] [--quick] [--out DIR] [--seed N]`` runs the error-analysis studies
(no name: the default suite) and prints their tables; ``--out`` writes report.md, JSON records and
figures. ``linalg-pc info`` prints versions, backends, threads and GPU presence.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys


def _version(mod: str) -> str:
    try:
        m = importlib.import_module(mod)
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return "not installed"
    return str(getattr(m, "__version__", "installed"))


def info_lines() -> list[str]:
    """What ``linalg-pc info`` prints."""
    import numba
    import numpy as np

    from ._version import __version__

    lines = [f"linalg_pc {__version__}", f"python {platform.python_version()} "
             f"({platform.machine()}, {os.cpu_count()} cpus)"]
    for mod in ("numpy", "scipy", "numba", "ml_dtypes", "array_api_compat", "array_api_strict",
                "torch", "cupy", "dask", "matplotlib"):
        lines.append(f"  {mod:<17} {_version(mod)}")
    backends = ["numpy"]
    if _version("array_api_strict") != "not installed":
        backends.append("array_api_strict")
    gpu = "none"
    if _version("torch") != "not installed":
        backends.append("torch")
        import torch

        if torch.cuda.is_available():
            gpu = f"torch: {torch.cuda.get_device_name(0)}"
    if _version("cupy") != "not installed":
        try:
            import cupy

            n = cupy.cuda.runtime.getDeviceCount()
            if n:
                backends.append("cupy")
                gpu = f"cupy: {n} device(s)"
        except Exception:  # noqa: BLE001 - no driver
            pass
    lines.append(f"backends: {', '.join(backends)}")
    blas = "unknown"
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg.get("Build Dependencies", {}).get("blas", {})
        blas = f"{b.get('name', '?')} {b.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 - older NumPy
        pass
    threads = os.environ.get("OMP_NUM_THREADS") or os.environ.get("OPENBLAS_NUM_THREADS")
    try:
        from threadpoolctl import threadpool_info

        threads = ", ".join(f"{d['internal_api']}={d['num_threads']}" for d in threadpool_info())
    except ImportError:
        threads = threads or f"default ({os.cpu_count()})"
    lines.append(f"BLAS: {blas}; threads: {threads}")
    lines.append(f"numba threads: {numba.config.NUMBA_NUM_THREADS}")
    from ._kernels import _twins, cpu_blas
    from .precision import buffer_cache_info

    try:
        layer = _twins.start_threads() or "not started"
    except Exception as exc:  # noqa: BLE001 - a requested layer that is not installed
        layer = f"unavailable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    lines.append(f"numba threading layer: {layer}; "
                 f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'passive (linalg_pc)')}")
    lines.append(f"direct TRSM (CholeskyQR): {cpu_blas.library_name() or 'not reachable'}")
    c = buffer_cache_info()
    lines.append(f"recycled output memory: up to {c['max_bytes'] >> 20} MiB idle")
    lines.append(f"GPU: {gpu}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from .analysis.registry import STUDIES
    from .analysis.report import run_studies

    ap = argparse.ArgumentParser(prog="linalg-pc", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    st = sub.add_parser("study", help="run the error-analysis studies and print/write a report")
    st.add_argument("names", nargs="*", metavar="NAME",
                    help=f"studies to run: {', '.join(sorted(STUDIES))}, or all "
                         "(default and all: the default suite; "
                         f"{', '.join(s for s in STUDIES if not STUDIES[s].in_default)} "
                         "only when named)")
    st.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    st.add_argument("--out", metavar="DIR", help="write report.md, JSON records and figures")
    st.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    st.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("info", help="versions, backends, BLAS threads, GPU presence")
    args = ap.parse_args(argv)
    if args.command == "info":
        print("\n".join(info_lines()))
        return 0
    try:
        run_studies(args.names, quick=args.quick, seed=args.seed, out=args.out,
                    progress=not args.no_progress)
    except ValueError as exc:
        ap.error(str(exc))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

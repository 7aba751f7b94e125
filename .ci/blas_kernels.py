"""Print the BLAS libraries that NumPy and SciPy loaded and the kernel (core type) of each.

``--core`` prints only the kernel of the first OpenBLAS (empty when there is none). OpenBLAS
builds with DYNAMIC_ARCH pick the kernel from the CPU at load time; the environment variable
``OPENBLAS_CORETYPE`` forces one (CI runs the suite once more with another kernel).
"""

from __future__ import annotations

import sys

import numpy  # noqa: F401  (loads NumPy's BLAS)
import scipy.linalg  # noqa: F401  (loads SciPy's BLAS)
import threadpoolctl


def main() -> int:
    blas = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    if "--core" in sys.argv[1:]:
        cores = [i.get("architecture") for i in blas if i.get("internal_api") == "openblas"]
        print(cores[0] if cores and cores[0] else "")
        return 0
    for i in blas:
        name = i["filepath"].rsplit("/", 1)[-1]
        print(f"{i['internal_api']} {i.get('version')} ({name}): kernel "
              f"{i.get('architecture')}, {i.get('num_threads')} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a run computed on: library versions, cores and BLAS kernels, kept in ``runs.details.environment``.

A run's labels are seeded, but its floating-point sums are the libraries' own: another BLAS kernel (OpenBLAS
picks one for the CPU, unless ``OPENBLAS_CORETYPE`` names one) or another version may round the last digits
of a confidence differently, and so decide a near tie the other way. When two runs of the same model and
items disagree, this says whether they ran on the same numerical stack.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

from threadpoolctl import threadpool_info

PACKAGES = ("numpy", "scipy", "pyarrow", "duckdb", "prefect", "faiss-cpu")


def run_environment() -> dict[str, Any]:
    """The versions of Python and of the packages that compute, the machine's cores, and each BLAS library
    loaded in this process with the kernel it uses and the ``OPENBLAS_CORETYPE`` it was given, if any."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    blas = [{"library": os.path.basename(info["filepath"]), "api": info["internal_api"], "version": info["version"],
             "kernel": info.get("architecture")}
            for info in threadpool_info() if info["user_api"] == "blas"]
    return {"python": platform.python_version(), "platform": f"{sys.platform}-{platform.machine()}",
            "cpu_count": os.cpu_count(), "packages": versions, "blas": blas,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}


def blas_summary() -> str:
    """One line for a benchmark's header: each BLAS library's kernel, and ``OPENBLAS_CORETYPE`` (a machine that
    sets it runs other kernels than its CPU would pick, and its timings are those kernels')."""
    import numpy  # noqa: F401  # loads numpy's BLAS: threadpool_info reports only the libraries loaded

    environment = run_environment()
    kernels = ", ".join(f"{blas['api']} {blas['version']} {blas['kernel']}" for blas in environment["blas"]) or "none"
    return f"BLAS: {kernels} (OPENBLAS_CORETYPE {environment['openblas_coretype'] or 'unset'})"

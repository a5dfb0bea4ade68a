"""The numerical stack a run or a benchmark reports: its BLAS kernels, and the OPENBLAS_CORETYPE that chose them."""

from threadpoolctl import threadpool_info

from tasks.environment import blas_summary


def test_blas_summary_names_the_loaded_kernels_and_the_coretype(monkeypatch):
    summary = blas_summary()  # it loads numpy's BLAS first
    kernels = [info["architecture"] for info in threadpool_info() if info["user_api"] == "blas"]
    assert kernels and all(kernel in summary for kernel in kernels)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Zen")
    assert blas_summary().endswith("(OPENBLAS_CORETYPE Zen)")
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert blas_summary().endswith("(OPENBLAS_CORETYPE unset)")

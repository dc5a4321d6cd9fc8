"""Batch runs: a finder over many images (resumable, all local cores, or Dask distributed)."""

from .finders import KINDS, guess_kind, run_finder
from .runner import (
    SUMMARY_FIELDS,
    BatchRecord,
    BatchResult,
    collect_inputs,
    process_image,
    read_output,
    read_summary,
    run_batch,
)

__all__ = [
    "KINDS",
    "SUMMARY_FIELDS",
    "BatchRecord",
    "BatchResult",
    "collect_inputs",
    "guess_kind",
    "process_image",
    "read_output",
    "read_summary",
    "run_batch",
    "run_finder",
]

"""Replace one benchmark's section of ``benchmarks/README.md``, leaving the others alone.

Each script owns the text between ``<!-- KEY:start -->`` and ``<!-- KEY:end -->``.
"""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"


def update_section(key: str, text: str, heading: str | None = None, path: Path = README) -> None:
    """Write ``text`` between the markers of ``key`` (appended, under ``heading``, if absent)."""
    from ptolemy_core.atomic import write_atomic

    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in doc and end in doc:
        doc = doc[: doc.index(start)] + block + doc[doc.index(end) + len(end):]
    else:
        title = f"\n\n{heading}\n\n" if heading else "\n\n"
        doc = doc.rstrip("\n") + title + block + "\n"
    write_atomic(path, doc)

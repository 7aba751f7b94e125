"""Study records: a list of plain dicts with table/JSON/pandas exports.

Every study returns :class:`Records`, so a notebook can print ``records.to_markdown()``, save
``records.to_json(path)`` or analyse ``records.to_pandas()`` (pandas optional).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else ("yes" if v else "no")
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == 0.0:
            return "0"
        a = abs(v)
        return f"{v:.3g}" if 1e-3 <= a < 1e5 else f"{v:.2e}"
    return str(v)


class _Unserializable(Exception):
    """A value :meth:`Records.to_json` cannot represent (its type name is the message)."""


class Records(list):
    """A list of flat dicts (one per measurement) with export helpers."""

    def __init__(self, rows: Iterable[dict] = (), *, title: str = ""):
        super().__init__(rows)
        self.title = title

    def columns(self) -> list[str]:
        cols: list[str] = []
        for r in self:
            for k in r:
                if k not in cols:
                    cols.append(k)
        return cols

    def to_markdown(self, columns: Sequence[str] | None = None) -> str:
        """A GitHub-flavoured markdown table of the records."""
        cols = list(columns) if columns is not None else self.columns()
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        for r in self:
            lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
        return "\n".join(lines)

    def to_json(self, path=None, **kwargs) -> str:
        """JSON text of the records; written to ``path`` if given.

        Non-finite floats become the strings "nan", "inf", "-inf"; NumPy scalars become Python
        numbers; arrays (of any library with ``tolist``: NumPy, and the others through it) become
        nested lists, tuples lists, and dicts are cleaned recursively. A value that JSON cannot
        hold raises TypeError naming its field (unless ``kwargs`` passes ``json.dumps`` a
        ``default=`` for it).
        """

        def clean(v):
            if isinstance(v, float):
                return v if math.isfinite(v) else str(v)
            if isinstance(v, (str, int, type(None))):  # bool is an int
                return v
            if isinstance(v, dict):
                return {k: clean(w) for k, w in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(w) for w in v]
            if getattr(v, "ndim", None) is not None and callable(getattr(v, "tolist", None)):
                return clean(v.tolist())  # an array (a 0-d one gives a scalar)
            if callable(getattr(v, "item", None)):
                return clean(v.item())  # a NumPy scalar
            if "default" in kwargs:
                return v  # the caller's json ``default=`` handles it
            raise _Unserializable(type(v).__name__)

        rows = []
        for r in self:
            row = {}
            for k, v in r.items():
                try:
                    row[k] = clean(v)
                except _Unserializable as exc:
                    raise TypeError(f"Records.to_json: field {k!r} holds a {exc} value, which "
                                    "JSON cannot represent") from None
            rows.append(row)
        text = json.dumps(rows, indent=2, **kwargs)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return text

    def to_pandas(self):
        """A pandas DataFrame of the records (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("to_pandas() needs pandas: pip install pandas") from exc
        return pd.DataFrame(list(self))

    def where(self, **match) -> Records:
        """The records whose fields equal the given values."""
        return Records((r for r in self if all(r.get(k) == v for k, v in match.items())),
                       title=self.title)

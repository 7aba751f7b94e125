"""The report writer behind ``linalg-pc study``.

The studies are registered in :mod:`.registry` (a function ``run(quick, seed, progress)``
returning a :class:`~.registry.StudyOutput`: named record tables, a paragraph of interpretation
generated from the numbers, and figure makers). :func:`run_studies` runs a selection, prints the
summary tables, and with an output folder writes ``report.md``, one JSON file per table and the
PNG figures. A study interrupted with Ctrl-C keeps (and writes) the studies that finished.
"""

from __future__ import annotations

import pathlib
import sys
import time

from .registry import STUDIES, Study, StudyOutput, register_study, resolve_names

__all__ = ["run_studies", "write_report", "Progress", "StudyOutput", "Study", "STUDIES",
           "register_study", "resolve_names"]


class Progress:
    """A minimal progress bar on stderr (a line per update when stderr is not a terminal)."""

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0

    def update(self, label: str, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        now = time.monotonic()
        if not self.tty and done < total and now - self._last < 2.0:
            return
        self._last = now
        width = 30
        filled = int(width * done / total)
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if (done >= total or not self.tty) else ""
        self.stream.write(f"\r  {label:<28} [{bar}] {done}/{total}{end}")
        self.stream.flush()


def write_report(outputs: dict[str, StudyOutput], out_dir: pathlib.Path, *, seed: int,
                 quick: bool, interrupted: bool = False,
                 skipped: dict[str, str] | None = None) -> pathlib.Path:
    """Write report.md, the JSON records and the figures of the finished studies (and a line
    for each opt-in study ``skipped`` for a missing optional dependency)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# linalg_pc study report", "",
             f"Seed {seed}; {'quick' if quick else 'default'} configuration."]
    if interrupted:
        lines += ["", "**Interrupted: only the studies below finished.**"]
    for name, o in outputs.items():
        lines += ["", f"## {o.title}", "", o.paragraph, "",
                  f"_Run time {o.seconds:.1f} s._"]
        for tname, recs in o.tables.items():
            fname = f"{name}_{tname}.json"
            recs.to_json(out_dir / fname)
            if tname in o.json_only:
                lines += ["", f"All records ({len(recs)}): [{fname}]({fname})"]
                continue
            lines += ["", f"### {recs.title or tname}", "", recs.to_markdown(), "",
                      f"Records: [{fname}]({fname})"]
        for fig_name, make in o.figures:
            try:
                make(out_dir / fig_name)
            except ImportError as exc:
                lines += ["", f"(figure {fig_name} skipped: {exc})"]
                continue
            lines += ["", f"![{fig_name}]({fig_name})"]
    for name, why in (skipped or {}).items():
        lines += ["", f"## {name}: skipped", "", why]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_studies(names: list[str], *, quick: bool = False, seed: int = 0, out=None,
                stream=None, progress: bool = True) -> dict[str, StudyOutput]:
    """Run studies, print their tables to ``stream``, write a report to ``out`` if given."""
    stream = stream if stream is not None else sys.stdout
    chosen = resolve_names(list(names))
    out_dir = pathlib.Path(out) if out is not None else None
    bar = Progress(enabled=progress)
    outputs: dict[str, StudyOutput] = {}
    skipped: dict[str, str] = {}
    interrupted = False
    try:
        for i, name in enumerate(chosen, 1):
            stream.write(f"[{i}/{len(chosen)}] {name}: {STUDIES[name].description}\n")
            stream.flush()
            t0 = time.perf_counter()
            try:
                o = STUDIES[name].run(quick=quick, seed=seed, progress=bar)
            except ImportError as exc:
                if STUDIES[name].in_default:
                    raise
                # an opt-in study whose extra is not installed (e.g. "optimizer" without torch)
                stream.write(f"  skipped: {exc}\n")
                stream.flush()
                skipped[name] = str(exc)
                continue
            o.seconds = time.perf_counter() - t0
            outputs[name] = o
            stream.write(f"\n## {o.title} ({o.seconds:.1f} s)\n\n{o.paragraph}\n")
            for tname, recs in o.tables.items():
                if (o.printed is None and tname not in o.json_only) or (
                        o.printed is not None and tname in o.printed):
                    stream.write(f"\n{recs.title}\n{recs.to_markdown()}\n")
            stream.flush()
    except KeyboardInterrupt:
        interrupted = True
        stream.write("\ninterrupted: keeping the finished studies\n")
    if out_dir is not None and (outputs or skipped):
        path = write_report(outputs, out_dir, seed=seed, quick=quick, interrupted=interrupted,
                            skipped=skipped)
        stream.write(f"\nwrote {path}\n")
    if interrupted:
        raise KeyboardInterrupt
    return outputs

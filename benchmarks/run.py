"""Run a benchmark suite: ``python benchmarks/run.py SUITE [--quick] [--json PATH] [--only TEXT]``.

Suites are the modules ``benchmarks/bench_<suite>.py``; ``all`` runs every suite. Each case times
linalg_pc and the library a user would otherwise call, in the same run, and prints the ratio.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import platform
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import format_table, run_case  # noqa: E402


def available_suites() -> list[str]:
    return sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    suites = available_suites()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("suite", choices=[*suites, "all"])
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    ap.add_argument("--json", metavar="PATH", help="write the records as a JSON list")
    ap.add_argument("--only", metavar="TEXT", action="append", default=[],
                    help="run only the cases whose name contains TEXT (repeatable)")
    args = ap.parse_args(argv)
    chosen = suites if args.suite == "all" else [args.suite]
    records = []
    for suite in chosen:
        mod = importlib.import_module(f"bench_{suite}")
        print(f"== {suite} ({'quick' if args.quick else 'full'}) on {platform.machine()}, "
              f"{platform.python_version()}", flush=True)
        recs = []
        for case in mod.cases(args.quick):
            if args.only and not any(t in case.name for t in args.only):
                continue
            rec = run_case(suite, case)
            recs.append(rec)
            print(f"  {rec['case']}: {rec['speedup']:.2f}x", flush=True)
        print(format_table(recs), flush=True)
        records += recs
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(records, indent=2))
        print(f"wrote {len(records)} records to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The instructor's command line: release, import, autograde, feedback, export, report, bench.

Run from the course folder (the repository root, where ``nbgrader_config.py`` is)::

    python -m dlcourse_tools.grade release lab01_perceptron            # solutions/ -> labs/ (+ gradebook)
    python -m dlcourse_tools.grade import lab01_perceptron moodle.zip  # -> submitted/<student>/lab01_perceptron/
    python -m dlcourse_tools.grade autograde lab01_perceptron -w 4     # 4 workers, sandboxed, progress bar + ETA
    python -m dlcourse_tools.grade feedback lab01_perceptron           # -> feedback/<student>/lab01_perceptron/*.html
    python -m dlcourse_tools.grade export                              # -> grades.csv
    python -m dlcourse_tools.grade report lab01_perceptron             # -> reports/lab01_perceptron/report.md (+ .png, .csv)
    python -m dlcourse_tools.grade bench --n 100 --workers 1 2         # grading speed (see dlcourse_tools.grading.timing)

``make release|import|autograde|feedback|export|report LAB=...`` wrap the same commands.
"""

from __future__ import annotations

import argparse
import difflib
import os
import subprocess
import sys
from pathlib import Path


class UsageError(Exception):
    """A mistake in the command line or the course folder: printed as one line, no traceback."""


def labs_of(course: Path) -> list[str]:
    """The labs of the course: folders of ``solutions/`` or ``labs/`` that hold a notebook."""
    found: set[str] = set()
    for folder in ("solutions", "labs"):
        root = Path(course) / folder
        if root.is_dir():
            found |= {p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.ipynb"))}
    return sorted(found)


def course_db_url(course: Path) -> str | None:
    """``c.CourseDirectory.db_url`` of the course's ``nbgrader_config.py``, if it sets one."""
    if not (Path(course) / "nbgrader_config.py").is_file():
        return None
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    return config.get("CourseDirectory", {}).get("db_url") or None


def check_lab(course: Path, lab: str, command: str) -> None:
    """Refuse, before anything is done, a lab that is not in ``solutions/`` or ``labs/``."""
    labs = labs_of(course)
    if lab in labs:
        if command == "release" and not any((Path(course) / "solutions" / lab).glob("*.ipynb")):
            raise UsageError(f"{lab} has no instructor notebook in {Path(course) / 'solutions' / lab}: nothing to release")
        return
    if not labs:
        raise UsageError(f"no labs in {course}: expected folders under solutions/ or labs/ "
                         "(run from the course folder, or pass --course)")
    close = difflib.get_close_matches(lab, labs, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UsageError(f"no lab named {lab!r} in {course}{hint}; the labs are: {', '.join(labs)}")


from dlcourse_tools.grading.course import release  # noqa: E402 (``python -m dlcourse_tools.grade release``)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlcourse_tools.grade", description=__doc__.split("\n")[0])
    parser.add_argument("--course", type=Path, default=Path("."), help="the course folder (default: .)")
    parser.add_argument("--db", default=None, help="gradebook URL (default: c.CourseDirectory.db_url of the course's "
                                                   "nbgrader_config.py, else sqlite:///COURSE/gradebook.db), "
                                                   "e.g. postgresql+psycopg://user@host/dlcourse (psycopg 3)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("release", help="generate the student version of a lab").add_argument("lab")
    p = sub.add_parser("import", help="import a folder or zip of submissions")
    p.add_argument("lab")
    p.add_argument("source", type=Path)
    p.add_argument("--roster", type=Path, help="a file with one expected student id per line")
    p = sub.add_parser("autograde", help="autograde submissions in parallel, sandboxed")
    p.add_argument("lab")
    p.add_argument("-w", "--workers", type=int, default=max(1, (os.cpu_count() or 2) - 0))
    p.add_argument("--student", action="append", help="only this student (repeatable)")
    p.add_argument("--timeout", type=int, default=120, help="per-cell timeout in seconds")
    p.add_argument("--memory-mb", type=int, default=4096, help="memory limit per kernel")
    p.add_argument("--cpu-s", type=int, default=600, help="CPU-time limit per kernel")
    p.add_argument("--no-sandbox", action="store_true", help="run kernels unisolated (only where namespaces are unavailable)")
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("feedback", help="HTML feedback without hidden tests, sanitized, pages rendered in parallel")
    p.add_argument("lab")
    p.add_argument("-w", "--workers", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per page (then a plain page says so)")
    p.add_argument("--student", action="append", help="only this student (repeatable)")
    sub.add_parser("export", help="grades of every lab as CSV").add_argument("--to", type=Path, default=None)
    sub.add_parser("report", help="score distributions and problem submissions").add_argument("lab")
    p = sub.add_parser("bench", help="time grading N generated lab-1 submissions")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--no-sequential", action="store_true", help="skip the plain `nbgrader autograde` run")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    course = args.course.resolve()
    try:
        return run(args, course)
    except (UsageError, ValueError) as err:  # bad input: one line, what was expected
        if os.environ.get("DLCOURSE_TRACEBACK"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, course: Path) -> int:
    """Carry out one parsed command."""
    if getattr(args, "lab", None) is not None:
        check_lab(course, args.lab, args.command)
    if args.command != "bench":
        args.db = args.db or course_db_url(course)
    if args.command == "release":
        release(course, args.lab)
    elif args.command == "import":
        from dlcourse_tools.grading.submissions import import_submissions

        if args.roster and not args.roster.is_file():
            raise UsageError(f"no roster file {args.roster}: expected a text file with one student ID per line")
        roster = args.roster.read_text().split() if args.roster else None
        r = import_submissions(args.source, course, args.lab, roster, db_url=args.db)
        print(f"imported {len(r.imported)} submissions of {args.lab}; "
              f"{len(r.problems)} unreadable or missing, {len(r.ignored)} with extra notebooks, "
              f"{len(r.unmatched)} files without a student, {len(r.collisions)} name collisions")
        for student, why in sorted(r.problems.items()):
            print(f"  {student}: {why}")
        for shared, keys in sorted(r.collisions.items()):
            ids = {k: i for i, k in r.keys.items()}
            print(f"  name collision on {shared}, kept apart: " + ", ".join(f"{k!r} -> {ids.get(k, shared)}" for k in keys))
    elif args.command == "autograde":
        from dlcourse_tools.grading.autograde import Options, autograde
        from dlcourse_tools.grading.submissions import read_record, zero_unreadable

        options = Options(workers=args.workers, timeout=args.timeout, memory_mb=args.memory_mb, cpu_s=args.cpu_s,
                          sandboxed=not args.no_sandbox, db_url=args.db)
        results = autograde(course, args.lab, args.student, options, progress=not args.no_progress)
        problems = read_record(course, args.lab).get("import", {}).get("problems", {})
        zero_unreadable(course, args.lab, {s: w for s, w in problems.items()
                                           if not args.student or s in args.student}, args.db)
        failed = [r for r in results if not r["success"]]
        print(f"graded {len(results) - len(failed)} of {len(results)} submissions"
              + (f"; failed: {', '.join(r['student'] for r in failed)}" if failed else ""))
        return 1 if failed else 0
    elif args.command == "feedback":
        from dlcourse_tools.grading.feedback import failed_pages, generate_feedback

        written = generate_feedback(course, args.lab, args.student, workers=args.workers, timeout=args.timeout,
                                    db_url=args.db)
        failed = failed_pages(course, args.lab, {p.parent.parent.name for p in written})
        print(f"wrote {len(written)} feedback files under {course / 'feedback'}"
              + (f"; {len(failed)} could not be rendered (a plain page says so): {', '.join(sorted(failed))}"
                 if failed else ""))
    elif args.command == "export":
        from dlcourse_tools.grading.report import export_csv

        print(f"wrote {export_csv(course, args.to, args.db)}")
    elif args.command == "report":
        from dlcourse_tools.grading.report import report

        print(f"wrote {report(course, args.lab, args.db)}")
    elif args.command == "bench":
        from dlcourse_tools.grading.timing import bench

        bench(args.n, args.workers, sequential=not args.no_sequential, json_path=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Grades out of the gradebook: the CSV export and a short report per lab, with a plot.

``export_csv`` is nbgrader's own CSV export (one row per student and lab: raw score, score,
max score, names). ``report`` writes, under ``reports/<lab>/``: ``questions.csv`` (one row per
student, one column per test), ``report.png`` (the distribution of total scores and each
test's mean score as a fraction of its points) and ``report.md``: the summary, the known
mistakes the checks recognised across the class (how many submissions made each, per test,
with ``report_mistakes.png``), then every submission that could not be read, errored, timed
out, killed its kernel or tampered with the checks, with the reason.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

from dlcourse_tools.grading.course import gradebook
from dlcourse_tools.grading.submissions import read_record


CSV_COLUMNS = ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email", "raw_score",
               "late_submission_penalty", "score", "max_score", "name"]


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet shows as text: no formula from a name like ``=HYPERLINK(...)``."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _number(text) else text


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def export_csv(course: Path, to: Path | None = None, db_url: str | None = None) -> Path:
    """Every grade of the course as CSV (``grades.csv`` by default): one row per student and lab.

    The columns of nbgrader's CSV export (``assignment, duedate, timestamp, student_id, last_name,
    first_name, email, raw_score, late_submission_penalty, score, max_score``; a student without a
    submission has 0) plus ``name``, the display name exactly as the LMS gave it at import
    (``grading/students.json``). Unlike nbgrader's export it is UTF-8 and quoted, so names with
    commas or any script survive, and a cell that a spreadsheet would run as a formula starts with ``'``.
    """
    from nbgrader.api import MissingEntry

    from dlcourse_tools.grading.submissions import load_registry

    to = Path(to or Path(course) / "grades.csv")
    display = load_registry(course)["names"]
    rows = []
    with gradebook(course, db_url) as gb:
        for assignment in gb.assignments:
            for student in gb.students:
                row = {"assignment": assignment.name, "duedate": assignment.duedate, "student_id": student.id,
                       "last_name": student.last_name, "first_name": student.first_name, "email": student.email,
                       "max_score": assignment.max_score, "name": display.get(student.id, "")}
                try:
                    submission = gb.find_submission(assignment.name, student.id)
                except MissingEntry:
                    row.update(timestamp="", raw_score=0.0, late_submission_penalty=0.0, score=0.0)
                else:
                    penalty = submission.late_submission_penalty or 0.0
                    row.update(timestamp=submission.timestamp, raw_score=submission.score,
                               late_submission_penalty=penalty, score=max(0.0, submission.score - penalty))
                rows.append([_cell(row[c]) for c in CSV_COLUMNS])
    with open(to, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    return to


def scores(course: Path, lab: str, db_url: str | None = None) -> tuple[list[str], dict[str, dict[str, float]], dict[str, float]]:
    """(test names in notebook order, student -> test -> score, test -> max score) of one lab."""
    from nbgrader.api import MissingEntry

    with gradebook(course, db_url) as gb:
        try:
            assignment = gb.find_assignment(lab)
        except MissingEntry:
            raise ValueError(f"{lab} is not in the gradebook: release it first (make release LAB={lab})") from None
        tests: list[str] = []
        maxima: dict[str, float] = {}
        for nb in assignment.notebooks:
            for cell in nb.grade_cells:
                key = cell.name if len(assignment.notebooks) == 1 else f"{nb.name}:{cell.name}"
                tests.append(key)
                maxima[key] = float(cell.max_score)
        table: dict[str, dict[str, float]] = {}
        for submission in assignment.submissions:
            row = table.setdefault(submission.student.id, {})
            for nb in submission.notebooks:
                for grade in nb.grades:
                    key = grade.name if len(assignment.notebooks) == 1 else f"{nb.name}:{grade.name}"
                    row[key] = float(grade.score or 0.0)
    order = {name: i for i, name in enumerate(tests)}
    return sorted(tests, key=order.get), table, maxima


def problems(course: Path, lab: str) -> list[tuple[str, str]]:
    """(student, reason) for every submission that needs the instructor's eye."""
    record = read_record(course, lab)
    out: list[tuple[str, str]] = []
    imp = record.get("import", {})
    out += [(s, f"not graded: {why}") for s, why in sorted(imp.get("problems", {}).items())]
    out += [(s, f"several notebooks; graded the newest, ignored {', '.join(old)}")
            for s, old in sorted(imp.get("ignored", {}).items())]
    out += [("?", f"no student found in the file name {f!r}") for f in imp.get("unmatched", [])]
    keys = {key: sid for sid, key in imp.get("keys", {}).items()}
    for shared, names in sorted(imp.get("collisions", {}).items()):
        kept = ", ".join(f"{n!r} as {keys[n]}" if n in keys else repr(n) for n in names)
        out.append((shared, f"name collision: {len(names)} distinct students would share the ID {shared}; "
                            f"kept apart, not merged: {kept}"))
    for student, r in sorted(record.get("autograde", {}).items()):
        if not r.get("success", True):
            out.append((student, "autograding failed: " + (r.get("error") or "").strip().splitlines()[-1:][0]
                        if r.get("error") else "autograding failed"))
        out += [(student, f"kernel died: {why}") for why in r.get("kernel_deaths", [])]
        out += [(student, f"timed out: {cell}") for cell in r.get("timeouts", [])]
        out += [(student, f"forbidden call: {what}") for what in dict.fromkeys(r.get("forbidden", []))]
    return out


def mistakes(course: Path, lab: str) -> tuple[int, dict[str, Counter], dict[tuple[str, str], str]]:
    """The known mistakes the checks recognised (``CheckError.mistake``), from ``grading/<lab>.json``.

    Returns (the number of graded submissions, test -> Counter(mistake -> submissions that made
    it), (test, mistake) -> one example of the message a student got). A submission counts once
    per test: a test stops at its first failed check.
    """
    graded = read_record(course, lab).get("autograde", {})
    counts: dict[str, Counter] = {}
    examples: dict[tuple[str, str], str] = {}
    for _student, record in sorted(graded.items()):
        for test, result in (record.get("tests") or {}).items():
            mistake = (result or {}).get("mistake")
            if not isinstance(mistake, str) or not mistake:
                continue
            counts.setdefault(test, Counter())[mistake] += 1
            examples.setdefault((test, mistake), " ".join(str(result.get("error") or "").split()))
    return len(graded), counts, examples


def mistake_lines(course: Path, lab: str, order: list[str] | None = None) -> list[str]:
    """The report's Markdown section on the known mistakes: one table row per test and mistake."""
    graded, counts, examples = mistakes(course, lab)
    rows = [(test, mistake, n) for test, counter in counts.items() for mistake, n in counter.items()]
    position = {t: i for i, t in enumerate(order or [])}
    rows.sort(key=lambda r: (position.get(r[0], len(position)), r[0], -r[2], r[1]))
    total = sum(n for _, _, n in rows)
    lines = [f"## Known mistakes ({total})", ""]
    if not rows:
        return lines + ["No failed check recognised a known mistake" +
                        (f" in the {graded} graded submissions." if graded else ": nothing graded yet."), ""]
    lines += [f"What the checks recognised in the {graded} graded submissions: the share is of all of them, "
              "so it says what to explain again.", "", "![known mistakes](report_mistakes.png)", "",
              "| test | mistake | submissions | share | what they were told |", "|---|---|---|---|---|"]
    for test, mistake, n in rows:
        # A message is "CheckError: <what was checked>: <the mistake's hint>": the hint is the sentence
        # that names the mistake (the whole message where it has another form).
        message = examples[(test, mistake)].partition(": ")[2] or examples[(test, mistake)]
        example = (message.partition(": ")[2] or message).replace("|", "\\|")
        example = example if len(example) <= 200 else example[:197] + "..."
        lines.append(f"| {test} | {mistake} | {n} | {n / graded:.0%} | {example} |")
    return lines + [""]


def plot_mistakes(course: Path, lab: str, to: Path) -> Path | None:
    """A bar per (test, mistake): the share of the graded submissions that made it; None if none did."""
    import matplotlib.pyplot as plt

    graded, counts, _ = mistakes(course, lab)
    rows = sorted(((n / graded, f"{test.removeprefix('test_')}: {mistake}") for test, counter in counts.items()
                   for mistake, n in counter.items()), reverse=True)[:25]
    if not rows:
        to.unlink(missing_ok=True)  # a stale plot would show mistakes that are gone
        return None
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.32 * len(rows)))
    shares, labels = zip(*reversed(rows))
    ax.barh(range(len(rows)), shares, color="tab:red")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set(xlim=(0, 1), xlabel=f"share of the {graded} graded submissions", title=f"{lab}: known mistakes")
    for i, share in enumerate(shares):
        ax.text(share + 0.01, i, f"{share:.0%}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(to, dpi=110)
    plt.close(fig)
    return to


def report(course: Path, lab: str, db_url: str | None = None) -> Path:
    """Write ``reports/<lab>/{report.md, report.png, report_mistakes.png, questions.csv}``; returns report.md."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(course) / "reports" / lab
    out.mkdir(parents=True, exist_ok=True)
    tests, table, maxima = scores(course, lab, db_url)
    total_max = sum(maxima.values())
    with open(out / "questions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", *tests, "total"])
        w.writerow(["(max)", *[maxima[t] for t in tests], total_max])
        for student, row in sorted(table.items()):
            w.writerow([student, *[row.get(t, 0.0) for t in tests], sum(row.values())])
    totals = [sum(row.values()) for row in table.values()]
    fractions = [sum(row.get(t, 0.0) for row in table.values()) / (maxima[t] * max(1, len(table))) for t in tests]
    if totals:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1.6]})
        ax1.hist(totals, bins=min(20, max(5, int(total_max) + 1)), range=(0, total_max), color="tab:blue", edgecolor="white")
        ax1.set(xlabel=f"total score (of {total_max:g})", ylabel="students", title=f"{lab}: {len(totals)} submissions")
        ax2.bar(range(len(tests)), fractions, color="tab:green")
        ax2.set_xticks(range(len(tests)), [t.removeprefix("test_") for t in tests], rotation=45, ha="right", fontsize=8)
        ax2.set(ylim=(0, 1), ylabel="mean score / points", title="per test")
        fig.tight_layout()
        fig.savefig(out / "report.png", dpi=110)
        plt.close(fig)
    else:
        (out / "report.png").unlink(missing_ok=True)  # a stale plot would show grades that are gone
    issues = problems(course, lab)
    if totals:
        mean = sum(totals) / len(totals)
        summary = (f"{len(totals)} graded submissions, mean {mean:.2f} / {total_max:g}, "
                   f"{sum(t == total_max for t in totals)} with full marks, {sum(t == 0 for t in totals)} with 0.")
    else:
        summary = (f"No graded submissions of {lab} yet: nothing to average "
                   f"(import and autograde first: make import autograde LAB={lab} FROM=...).")
    lines = [f"# Grade report: {lab}", "", summary, ""]
    if totals:
        lines += ["![score distribution](report.png)", "",
                  "| test | points | mean | full marks |", "|---|---|---|---|"]
        for t, frac in zip(tests, fractions):
            full = sum(row.get(t, 0.0) == maxima[t] for row in table.values())
            lines.append(f"| {t} | {maxima[t]:g} | {frac * maxima[t]:.2f} | {full}/{len(table)} |")
        lines.append("")
    lines += mistake_lines(course, lab, tests)
    plot_mistakes(course, lab, out / "report_mistakes.png")
    lines += [f"## Submissions to look at ({len(issues)})", ""]
    lines += [f"- **{s}**: {why}" for s, why in issues] or ["None: every submission was read and ran normally."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"

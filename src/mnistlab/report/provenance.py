"""report.html's provenance section: where a sweep's jobs came from (their provenance.json).

What every job shares is one list of fields and values (commit, versions, CPU, ...); what
differs between jobs, a line per job. Values come from job folders, so they reach the page
escaped, through mnistlab.report.markup's `tag` like every other. Kept free of torch.
"""

from typing import Any

from mnistlab.names import PATCH_FILE, PROVENANCE_FILE, UNREADABLE
from mnistlab.report.compare import ABSENT, provenance_of, shown
from mnistlab.report.jobs import Job
from mnistlab.report.markup import Html, tag

# The fields named in the section's one-line summary, where every job shares them.
HEADLINE = ("git.commit", "git.branch", "git.note", "git.patch.bytes", "host", "versions.torch")


def provenance_section(jobs: list[Job]) -> Html:
    """Where the jobs came from: shared fields, then those that differ, folded under one line."""
    readable = [job for job in jobs if job.status != UNREADABLE]  # a link is never read through
    recorded = {job.folder.name: provenance_of(job.folder) for job in readable}
    found = {name: fields for name, fields in recorded.items() if fields is not None}
    if not found:
        return tag("p", f"Provenance: no job recorded any ({PROVENANCE_FILE}).")
    same, differ = split(list(found.values()))
    first = next(iter(found.values()))
    summary = tag("summary", headline({key: first[key] for key in same}, len(found), len(jobs)))
    parts = [summary, pairs([(key, shown(first[key])) for key in same])]
    if differ:
        per_job = [(name, by_job(fields, differ)) for name, fields in found.items()]
        parts += [tag("p", "Fields that differ between jobs:"), pairs(per_job)]
    return tag("details", *parts)


def split(found: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The fields with one value in every job, and the others (missing from some included)."""
    keys = list(dict.fromkeys(key for fields in found for key in fields))
    first = found[0]
    same = [key for key in keys if all(job.get(key, ABSENT) == first.get(key) for job in found)]
    return same, [key for key in keys if key not in same]


def headline(same: dict[str, Any], recorded: int, jobs: int) -> str:
    """`Provenance of 9 jobs (provenance.json, uncommitted.patch): git.commit=..., host=...`."""
    named = ", ".join(f"{key}={shown(same[key])}" for key in HEADLINE if key in same)
    counted = f"{recorded} jobs" if recorded == jobs else f"{recorded} of {jobs} jobs"
    return f"Provenance of {counted} ({PROVENANCE_FILE}, {PATCH_FILE} where dirty): {named}"


def by_job(fields: dict[str, Any], keys: list[str]) -> str:
    """One job's values of `keys`: `host=node1, git.commit=abc`."""
    return ", ".join(f"{key}={shown(fields.get(key, ABSENT))}" for key in keys)


def pairs(items: list[tuple[str, str]]) -> Html:
    """Names and values as a description list (a table would join the page's ranked tables)."""
    return tag("dl", *(tag("div", tag("dt", name), tag("dd", value)) for name, value in items))

"""Seconds per stage of a `dvc repro` from its stamped log, as the GPU check writes it.

The GPU check (benchmarks/gpu_check_stage_two.sh) prefixes every output line with the seconds since the script
started (``  123.4s Running stage 'distill@kd-0':``) and ends the run's log with the line ``repro exited with N``.
`dvc repro` runs one stage at a time, so a stage lasts from its ``Running stage`` line to the next stage's, the
last one to the end line. Stages DVC skipped print no such line and count nothing.

    python -m benchmarks.stage_times gpu-profile.log > gpu-profile-timings.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

_STAMPED = re.compile(r"^\s*(\d+(?:\.\d+)?)s (.*)$")
_STAGE = re.compile(r"^Running stage '([^']+)':")
_END = re.compile(r"^repro exited with (-?\d+)")


@dataclass(frozen=True)
class StageTimes:
    """What one stamped `dvc repro` log says of its stages' wall time (seconds)."""

    stages: dict[str, float]  # each stage that ran, in the order it ran
    groups: dict[str, float]  # summed per stage name before '@' (finetune, explain, distill, evaluate, ...)
    first_start: float | None  # the stamp of the first stage's start
    end: float | None  # the stamp of the end line; None when the log stops before it (the run was cut short)
    exit_code: int | None
    total: float | None  # from the first stage's start to the end line
    cut_short: str | None  # the stage still running when the log stops (its seconds are those it had), if any


def stage_times(lines: list[str]) -> StageTimes:
    """Per-stage seconds from a stamped log's lines; unstamped lines are ignored."""
    starts: list[tuple[str, float]] = []
    end: float | None = None
    exit_code: int | None = None
    last = 0.0
    for line in lines:
        stamped = _STAMPED.match(line.rstrip("\n"))
        if not stamped:
            continue
        stamp, text = float(stamped.group(1)), stamped.group(2)
        last = stamp
        if stage := _STAGE.match(text):
            starts.append((stage.group(1), stamp))
        elif finished := _END.match(text):
            end, exit_code = stamp, int(finished.group(1))
    stages: dict[str, float] = {}
    for (name, start), (_, following) in zip(starts, starts[1:], strict=False):
        stages[name] = round(following - start, 1)
    cut_short = None
    if starts:
        name, start = starts[-1]
        stages[name] = round((end if end is not None else last) - start, 1)
        cut_short = None if end is not None else name
    groups: dict[str, float] = {}
    for name, seconds in stages.items():
        group = name.split("@")[0]
        groups[group] = round(groups.get(group, 0.0) + seconds, 1)
    first = starts[0][1] if starts else None
    total = round(end - first, 1) if end is not None and first is not None else None
    return StageTimes(stages, groups, first, end, exit_code, total, cut_short)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path, help="the stamped log of one `dvc repro`")
    args = parser.parse_args(argv)
    times = stage_times(args.log.read_text(encoding="utf-8", errors="replace").splitlines())
    json.dump(asdict(times), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Summarise a ``py-spy record -f raw`` profile: inclusive and self share per function.

::

    python benchmarks/spy_summary.py poll.txt [--under Runner.run] [--top 40] [--grep asyncclient]

Line numbers are dropped, so each function counts once per sample however many lines of it are
on the stack. ``--under`` keeps only the samples whose stack contains that function (e.g. the
event loop, leaving imports and start-up out); shares are of those samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("raw")
    parser.add_argument("--under", default="Runner.run", help="keep stacks through this function")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--grep", default="", help="only list functions whose name has this")
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in Path(args.raw).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        if args.under and not any(frame.startswith(args.under + " ") for frame in frames):
            continue
        count = int(count_text)
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    print(f"{total} samples under {args.under or 'everything'}\n")
    print(f"{'incl':>6} {'self':>6}  function")
    for frame, count in inclusive.most_common():
        if args.grep and args.grep not in frame:
            continue
        print(f"{count / total:6.1%} {own[frame] / total:6.1%}  {frame}")
        args.top -= 1
        if args.top <= 0:
            break


if __name__ == "__main__":
    main()

"""Where the time goes, from py-spy's collapsed stacks (``bench/run.py --py-spy``).

    python bench/profile.py bench/results/profiles/gateway-json-0ms-c16.txt [--top 30]

Prints the functions with the most samples on the stack (inclusive) and on top of it
(self), as shares of all samples; frames are ``function (file)`` without line numbers.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def _package(raw: str) -> str:
    """The top-level package (or stdlib module) of a frame: py-spy shortens paths to
    ``package/module.py:line``."""
    where = raw.partition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    head, _, rest = where.partition("/")
    if head == "gateway":  # ours, by module
        return "gateway/" + rest.split("/")[0]
    return head if rest else where


def _frame(raw: str) -> str:
    """``name (path:line)`` -> ``name (package/module.py)``."""
    name, _, where = raw.partition(" (")
    where = _LINE.sub(")", "(" + where) if where else ""
    short = "/".join(where.strip("()").split("/")[-2:])
    return f"{name} ({short})" if short else name


def summarize(path: Path, top: int) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        total += samples
        for frame in set(frames):
            inclusive[frame] += samples
        if frames:
            own[frames[-1]] += samples
            packages[_package(stack.split(";")[-1])] += samples
    lines = [f"{path.name}: {total} samples", "", "inclusive %  self %  function"]
    for frame, samples in inclusive.most_common(top):
        lines.append(f"{100 * samples / total:10.1f}  {100 * own[frame] / total:6.1f}  {frame}")
    lines += ["", "self % by package"]
    for package, samples in packages.most_common(top):
        lines.append(f"{100 * samples / total:10.1f}  {package}")
    lines += ["", "self % (top of stack)"]
    for frame, samples in own.most_common(top):
        lines.append(f"{100 * samples / total:10.1f}  {frame}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    print(summarize(args.profile, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())

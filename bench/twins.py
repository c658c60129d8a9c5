"""Twin-printing benchmark: photos of printings that share their picture, decided by their line.

The catalogue is one written by `../shared/tools/distractors.py --twins F`: printings of one
picture (`"synthetic": "twin"`, a shared `illustration_id`, frame 2015) differ only by their
two-line collector line (`C 0038` / `T1F • EN`); the set symbol is the same. For --pictures
pictures (half of them from groups of 5 or more printings, where stop words used to eat the
art: issue 25), one member each is rendered at each of --heights px (card height; the
renderer of `bench/renders.py`: a table, perspective, a glare band, blur, noise, JPEG) and
recognised and settled in a serving process as `POST /infer` does (decode, recognize,
settle with the collector-line reader) against --bundle. Each photo is:

- decided right: the photographed printing, not flagged (the line named it);
- flagged: the right card, flagged `ambiguous_printing` (the photographed printing first, or
  among the alternatives: an honest "cannot tell");
- WRONG printing: another printing of the card, not flagged;
- WRONG card: another card;
- none: no answer.

    python -m bench.twins --bundle RESOURCES/run --catalog CARDS.jsonl.gz
                          [--pictures 40] [--heights 800,1200] [--seed S]

Skips with a message when the catalogue has no twins (or is absent).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import middle, open_served, recognise_upload, serve_in_subprocess, write_json
from bench.renders import render

SEED = 20261207
OUTCOMES = ("decided right", "flagged", "WRONG printing", "WRONG card", "none")


def twin_groups(catalog: Path) -> dict[str, list[dict[str, Any]]]:
    """Printings of each synthetic twin picture, by illustration_id, in catalogue order."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with gzip.open(catalog, "rt", encoding="utf-8") as fh:
        for line in fh:
            card = json.loads(line)
            if card.get("synthetic") == "twin":
                groups[card["illustration_id"]].append(
                    {"id": card["id"], "name": card["name"], "set": card["set"],
                     "number": card["collector_number"],
                     "image": str(catalog.parent / card["image_uris"]["large"])})
    return groups


def plan(catalog: Path, pictures: int, seed: int) -> list[dict[str, Any]]:
    """One member of each of `pictures` pictures, half from groups of >= 5 printings."""
    import numpy as np

    rng = np.random.default_rng(seed)
    groups = [g for g in twin_groups(catalog).values() if len(g) >= 2]
    large = [g for g in groups if len(g) >= 5]
    small = [g for g in groups if len(g) < 5]
    chosen: list[list[dict[str, Any]]] = []
    for pool, count in ((large, pictures // 2), (small, pictures - pictures // 2)):
        if pool:
            picks = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
            chosen += [pool[int(i)] for i in picks]
    return [{**group[int(rng.integers(len(group)))], "group": len(group)} for group in chosen]


def serve(bundle_dir: Path, items: list[dict[str, Any]], heights: list[int], seed: int
          ) -> list[dict[str, Any]]:
    import cv2

    bundle, reader = open_served(bundle_dir)
    rows = []
    for n, item in enumerate(items):
        scan = cv2.imread(item["image"], cv2.IMREAD_COLOR)
        for height in heights:
            data = render(scan, height, seed * 1000 + n * 10 + heights.index(height))
            start = time.perf_counter()
            found = recognise_upload(bundle, data, reader, deadline=start + 1.5)
            rec = found.searched
            source = found.answers[0].evidence.source if found.answers else "appearance"
            match = rec.match
            if match is None:
                outcome = "none"
            elif match.card["name"] != item["name"]:
                outcome = "WRONG card"
            elif rec.ambiguous_printing:
                outcome = "flagged"
            else:
                outcome = "decided right" if match.card["id"] == item["id"] else "WRONG printing"
            rows.append({**item, "height": height, "outcome": outcome,
                         "flagged": rec.ambiguous_printing, "source": source,
                         "answer": (f"{match.card['name']} {match.card['set']} "
                                    f"{match.card['collector_number']}") if match else None,
                         "ms": round((time.perf_counter() - start) * 1000, 1)})
    bundle.close()
    return rows


def table(rows: list[dict[str, Any]], heights: list[int]) -> str:
    lines = ["| card height | group size | photos | " + " | ".join(OUTCOMES) + " | ms p50 |",
             "|---" * (len(OUTCOMES) + 4) + "|"]
    for height in heights:
        for label, test in (("2-4", lambda g: g < 5), (">= 5", lambda g: g >= 5),
                            ("all", lambda g: True)):
            mine = [r for r in rows if r["height"] == height and test(r["group"])]
            if not mine:
                continue
            counts = [sum(r["outcome"] == o for r in mine) for o in OUTCOMES]
            ms = middle(r["ms"] for r in mine)
            lines.append(f"| {height} px | {label} | {len(mine)} | "
                         + " | ".join(map(str, counts)) + f" | {ms:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.twins",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="a bundle directory (resources/run)")
    parser.add_argument("--catalog", required=True, help="the catalogue it was built from")
    parser.add_argument("--pictures", type=int, default=40)
    parser.add_argument("--heights", default="800,1200")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", default=None, help="JSON rows (default: none)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    heights = [int(h) for h in args.heights.split(",")]
    if args.serve:
        items = json.loads(Path(args.serve).read_text())
        print(json.dumps(serve(Path(args.bundle), items, heights, args.seed)))
        return 0
    catalog = Path(args.catalog).resolve()
    items = plan(catalog, args.pictures, args.seed) if catalog.is_file() else []
    if not items:
        print(f"twins bench skipped: no twin printings in {catalog}")
        return 0
    plan_path = Path(args.bundle).resolve().parent.parent / "twins-plan.json"
    plan_path.write_text(json.dumps(items))
    rows = serve_in_subprocess("bench.twins", [
        "--serve", str(plan_path), "--bundle", str(Path(args.bundle).resolve()), "--catalog",
        str(catalog), "--heights", args.heights, "--seed", str(args.seed)],
        show_log=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    print(f"twin printings of {len(items)} pictures ({sum(i['group'] >= 5 for i in items)} "
          f"of >= 5 printings), catalogue {catalog.name}, bundle {Path(args.bundle).resolve()}")
    print(table(rows, heights))
    for r in rows:
        if r["outcome"] != "decided right":
            print(f"  {r['height']:>5} px  {r['name']} ({r['set']} {r['number']}, group of "
                  f"{r['group']}): {r['outcome']}{' -> ' + r['answer'] if r['answer'] else ''}"
                  f" [{r['source']}]")
    if args.out:
        write_json(Path(args.out), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Printings benchmark: the eval catalogue plus R synthetic reprints of every photographed card.

../shared/tools/distractors.py --reprints R writes, per photographed card, printings that
share its art: odd ones in another card's frame and text ("frame" reprints, which a photo
shows), even ones identical but for the set symbol and collector line ("footer" reprints,
which a photo can hardly show). A bundle of that catalogue is built with the default
profile, every photo is recognised in a serving process (as bench/eval.py does), and
each single-card photo is classified:

- right: the photographed printing, not flagged;
- right, flagged: the photographed printing, flagged `ambiguous_printing`;
- flagged, right offered: a footer reprint of the photographed card answered, flagged, with
  the right printing among the same-art alternatives (what an honest recogniser may say);
- WRONG, flagged: flagged, but the answer is not a footer reprint of the right card, or
  the right printing is not offered;
- WRONG, unflagged: another printing claimed without the flag (the error to avoid).

    python -m bench.eval --reprints 4 [--seed S] [--work DIR]
    python -m bench.printings --reprints 4 ...          (the same)
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import (
    DATA_DIR,
    EVAL_DIR,
    RESULTS_DIR,
    eval_set_missing,
    middle,
    serve_in_subprocess,
    threads_env,
    write_json,
)
from bench.scale import env_for, serve_http, summarise

SEED = 20261127
HARD_PAIRS = ("Mind Stone", "Rakdos Signet")


def _log(message: str) -> None:
    print(f"[printings] {message}", flush=True)


def catalogue(eval_dir: Path, work: Path, reprints: int, seed: int) -> Path:
    """WORK/cards.jsonl.gz: the eval catalogue and its reprints (generated once)."""
    cards = work / "cards.jsonl.gz"
    if not cards.exists():
        tool = eval_dir.parent / "tools" / "distractors.py"
        _log(f"generating {reprints} reprints of each photographed card into {work} ...")
        subprocess.run([sys.executable, str(tool), str(eval_dir), str(work), "0", "--seed",
                        str(seed), "--reprints", str(reprints), "--labels",
                        str(eval_dir / "labels.csv")], check=True)
    return cards


def ensure_bundle(cards: Path, bundle_dir: Path, threads: int, log: Any) -> Path:
    """`bundle_dir`, built from the catalogue `cards` with the default profile unless a
    previous run left one there built the same way (benchmarks of a catalogue share its
    bundle; one of older code, another format or other build fields, is built again)."""
    import shutil

    from app.recognition.index.bundle import FORMAT_VERSION, manifest_params, read_manifest
    from app.recognition.params import DEFAULT

    if (bundle_dir / "manifest.json").exists():
        manifest = read_manifest(bundle_dir)
        if manifest.get("format_version") != FORMAT_VERSION or manifest_params(
                manifest).build_differences(DEFAULT):
            log(f"{bundle_dir} was built by other code or parameters: building it again")
            shutil.rmtree(bundle_dir)
    if not (bundle_dir / "manifest.json").exists():
        from app.catalog.records import reference_images
        from app.recognition.index.build import build_bundle

        log(f"building {bundle_dir} ...")
        build_bundle(reference_images(cards), bundle_dir, DEFAULT, progress=False,
                     workers=threads)
    return bundle_dir


def http_latency(bundle_dir: Path, work: Path, eval_dir: Path, repeat: int) -> dict[str, Any]:
    """Serve `bundle_dir` with the real server (bench/scale.py's `serve_http`: the
    collector line is read as in production) and POST every eval photo; its summary."""
    resources = work / "http" / "resources"
    resources.mkdir(parents=True, exist_ok=True)
    run = resources / "run"
    if not run.is_symlink():
        run.symlink_to(bundle_dir.resolve())
    return summarise(serve_http(env_for(work / "http", resources, "default"), eval_dir,
                                repeat))


def classify(photo: dict[str, Any], reprint: dict[str, tuple[str, str]]) -> str:
    """One single-card photo's outcome (see the module docstring)."""
    truth, answer = photo["truth"][0], photo["answer"]
    if answer == truth:
        return "right, flagged" if photo["ambiguous"] else "right"
    if not photo["ambiguous"]:
        return "WRONG, unflagged"
    footer_of_truth = reprint.get(answer or "") == (truth, "reprint-footer")
    if footer_of_truth and truth in photo["same_art_ids"]:
        return "flagged, right offered"
    return "WRONG, flagged"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.printings",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--reprints", type=int, required=True)
    parser.add_argument("--eval-dir", default=str(EVAL_DIR))
    parser.add_argument("--work", default=str(DATA_DIR / "bench-printings"))
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--http", action=argparse.BooleanOptionalAction, default=True,
                        help="also serve the bundle over HTTP and time every photo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS_DIR / "printings.json"))
    args = parser.parse_args(argv)
    threads_env(2)  # before numpy and FAISS load, as `bench.eval --reprints` always did
    eval_dir = Path(args.eval_dir).resolve()
    if eval_set_missing(eval_dir, "printings", "labels.csv"):
        return 0
    work = Path(args.work).resolve() / f"r{args.reprints}-s{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    cards = catalogue(eval_dir, work, args.reprints, args.seed)
    reprint: dict[str, tuple[str, str]] = {}
    with gzip.open(cards, "rt", encoding="utf-8") as fh:
        for line in fh:
            card = json.loads(line)
            if card.get("reprint_of"):
                reprint[card["id"]] = (card["reprint_of"], card["synthetic"])

    bundle_dir = ensure_bundle(cards, work / "bundle", args.threads, _log)
    _log("recognising the photos in a serving process ...")
    served = serve_in_subprocess("bench.eval", [
        "--serve", str(bundle_dir), "--eval-dir", str(eval_dir), "--repeat", str(args.repeat),
        "--threads", str(args.threads)])
    photos = served["photos"]
    single = [p for p in photos if p["kind"] == "catalogued"]
    outcomes: dict[str, int] = {}
    print(f"\nPrintings: {len(reprint)} reprints of the photographed cards added "
          f"(seed {args.seed})\n")
    print(f"{'photo':20} {'truth':30} {'answer':34} {'by':15} outcome (line read)")
    for p in single:
        outcome = classify(p, reprint)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        p["outcome"] = outcome
        flag = " (ambiguous)" if p["ambiguous"] else ""
        evidence = p.get("printing_evidence") or {}
        print(f"{Path(p['photo']).name:20} {p['truth_label'][:30]:30} "
              f"{(p['answer_label'] + flag)[:34]:34} {evidence.get('source', '-'):15} "
              f"{outcome} ({evidence.get('text')!r})")
    hard = [p for p in single if p["truth_label"].startswith(HARD_PAIRS)]
    multi = [p for p in photos if p["kind"] == "multi"]
    out_of_catalogue = [p for p in photos if p["kind"] == "out"]
    summary = {
        "reprints": len(reprint),
        "single_photos": len(single),
        "outcomes": outcomes,
        # the photographed printing answered (flagged or not: each also has footer reprints)
        "hard_pairs_right": sum(p["answer"] == p["truth"][0] for p in hard),
        "hard_pairs_of": len(hard),
        "false_accepts": sum(p["answer"] is not None for p in out_of_catalogue),
        "false_accepts_of": len(out_of_catalogue),
        "multi_found": sum(len(set(p["truth"]) & set(p.get("multi_ids", []))) for p in multi),
        "multi_reported": sum(len(p.get("multi_ids", [])) for p in multi),
        # found with the photographed printing and not flagged
        "multi_decided": sum(
            answer in p["truth"] and not flagged
            for p in multi
            for answer, flagged in zip(p.get("multi_ids", []), p.get("multi_ambiguous", []),
                                       strict=False)
        ),
        "read_line_ms_p50": middle(p.get("read_line_ms") or 0.0 for p in single)
        if single else None,
        "multi_of": sum(len(p["truth"]) for p in multi),
        "ms_p50": middle(p["ms"] for p in single) if single else None,
    }
    print()
    for name in ("right", "right, flagged", "flagged, right offered", "WRONG, flagged",
                 "WRONG, unflagged"):
        print(f"{name:28} {outcomes.get(name, 0)}/{len(single)}")
    print(f"{'Mind Stone + Rakdos Signet':28} {summary['hard_pairs_right']}/"
          f"{summary['hard_pairs_of']} answered with the photographed printing")
    print(f"{'out-of-catalogue accepted':28} {summary['false_accepts']}/"
          f"{summary['false_accepts_of']}")
    print(f"{'IMG_5981 multi=true':28} {summary['multi_found']}/{summary['multi_of']} found, "
          f"{summary['multi_decided']} decided unflagged, {summary['multi_reported']} reported")
    for p in multi:
        print(f"{'':28} {' + '.join(p.get('multi_labels', []))}")
    print(f"{'single-card p50 ms':28} {summary['ms_p50']} (reading the line: p50 "
          f"{summary['read_line_ms_p50']} ms)")
    if args.http:
        _log("the same bundle served by `python -m app`: every photo POSTed over HTTP ...")
        summary["http"] = http_latency(bundle_dir, work, eval_dir, max(args.repeat, 3))
        for group, figures in summary["http"]["latency"].items():
            print(f"{'HTTP ' + group:28} p50 {figures['p50']} / p95 {figures['p95']} ms "
                  f"({figures['n']} photos)")
        print(f"{'HTTP right / false accepts':28} {summary['http']['right']}/"
              f"{summary['http']['right_of']}, {summary['http']['false_accepts']}/"
              f"{summary['http']['false_of']}")
    out = write_json(Path(args.out), {"summary": summary, "photos": photos})
    print(f"\nwritten: {out}")
    return 0 if outcomes.get("WRONG, unflagged", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

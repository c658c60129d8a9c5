"""The benchmarks: recognition on the real photos of ../shared/eval and at catalogue scale,
rendered photos, the collector line, twin printings, index structures, the service under load
and catalogue ingest. `make bench` runs them in order; each is `python -m bench.<name>`, run
from the repository's root.

../shared lives next to the repository, not in it: eval/ holds the photos (labels.csv), the
catalogue they were taken from (cards.jsonl.gz) and its scans, tools/ the generator of
synthetic printings (distractors.py). Without it, each benchmark that reads it prints one
"skipped" line and exits 0. What they share is in bench/common.py; they do not import each
other in a circle (tests/test_bench_package.py checks it).
"""

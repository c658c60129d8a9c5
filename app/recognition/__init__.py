"""Card recognition: SIFT features, an IVF-PQ descriptor bundle, and a matcher.

Modules: `params` (every knob, recorded in the bundle), `imageio` (safe decoding),
`features` (one extraction function for references and queries), `bundle` (build/open the
descriptor bundle), `matcher` (votes -> exact re-rank + RANSAC -> photometric decision).
"""

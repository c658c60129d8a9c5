"""The decision among verified candidates: the art first (its correlation and its margin over a
rival in the same place give a calibrated confidence), then the printing of that art
(`appearance.printing_odds`)."""

from __future__ import annotations

import math

from app.recognition.index.bundle import Bundle
from app.recognition.match.appearance import printing_odds
from app.recognition.match.geometry import corners, overlap
from app.recognition.match.records import Candidate, Verified
from app.recognition.params import FeatureParams


def logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


def same_art(a: Verified, b: Verified, bundle: Bundle) -> bool:
    """Printings that (may) share the art: same illustration_id when the catalogue has both,
    otherwise the same card name (reprints mostly reuse the art; the printing is then told
    by the whole-card correlation, and a different art scores low there anyway)."""
    ca, cb = bundle.card(a.row), bundle.card(b.row)
    if ca.get("illustration_id") and cb.get("illustration_id"):
        return bool(ca["illustration_id"] == cb["illustration_id"])
    return bool(ca.get("name") == cb.get("name"))


def decide(
    verified: list[Verified], bundle: Bundle, params: FeatureParams
) -> tuple[Candidate | None, list[Candidate]]:
    """Pick the art, then the printing; confidence from art correlation and its margin.

    Art confidence = logistic(slope * min(art - conf_center, art - rival - conf_margin)),
    where `art` is the art-box correlation of the best art and `rival` that of the best
    candidate of another art covering the same part of the photo (another card elsewhere in
    the photo is not a rival). The answer is accepted on the art confidence. Printings of
    that art are then weighed by `appearance.printing_odds`; each candidate's confidence is
    its art confidence times its printing probability, and when no printing is sure the
    answer is flagged ambiguous rather than dropped.
    Measured on the eval set: right cards correlate 0.91-0.99, wrong ones at most 0.48.
    """
    if not verified:
        return None, []
    if params.decision == "inliers":
        ranked = sorted(verified, key=lambda v: -v.inliers)
        cands = [
            candidate(v, bundle, float(v.inliers), v.inliers / (v.inliers + params.min_inliers))
            for v in ranked
        ]
        best = cands[0]
        return (best, cands[1:]) if best.confidence >= params.accept else (None, cands)

    def confidence(art: float, rival: float) -> float:
        evidence = min(art - params.conf_center, art - rival - params.conf_margin)
        return logistic(params.conf_slope * evidence)

    top_art = max(verified, key=lambda v: v.art_corr)
    where = corners(top_art, bundle)
    here = [v for v in verified if v is top_art or overlap(corners(v, bundle), where) > 0.5]
    # printings of the art in the same place; the same art elsewhere is another card
    group = [v for v in here if v is top_art or same_art(v, top_art, bundle)]
    others = [v for v in verified if all(v is not g for g in group)]
    rival = max((v.art_corr for v in here if all(v is not g for g in group)), default=0.0)
    views = [v.view for v in group if v.view is not None]
    assert len(views) == len(group), "photometric verification leaves a view on each"
    odds = printing_odds(views, params)
    likely = sorted(
        range(len(group)), key=lambda i: (-odds.probabilities[i], -group[i].card_corr)
    )
    cands = []
    for i in likely:
        v = group[i]
        art_confidence = confidence(v.art_corr, rival)
        c = candidate(v, bundle, v.art_corr + v.card_corr,
                       art_confidence * odds.probabilities[i])
        c.art_confidence = round(art_confidence, 4)
        c.same_art = True
        c.ambiguous = odds.ambiguous
        cands.append(c)
    accepted = confidence(group[likely[0]].art_corr, rival) >= params.accept
    others.sort(key=lambda v: -(v.art_corr + v.card_corr))
    shown = {v.row for v in group}  # a printing also verified elsewhere is listed once
    for v in others:
        if v.row in shown:
            continue
        shown.add(v.row)
        cands.append(candidate(v, bundle, v.art_corr + v.card_corr,
                                confidence(v.art_corr, top_art.art_corr)))
    return (cands[0], cands[1:]) if accepted else (None, cands)


def candidate(v: Verified, bundle: Bundle, score: float, confidence: float) -> Candidate:
    return Candidate(
        row=v.row,
        card=bundle.card(v.row),
        score=round(score, 4),
        inliers=v.inliers,
        confidence=round(confidence, 4),
        art_confidence=round(confidence, 4),  # decide() sets it apart for printings of an art
        votes=round(v.votes, 2),
        art_inliers=v.art_inliers,
        art_corr=round(v.art_corr, 4),
        card_corr=round(v.card_corr, 4),
        source=v,
    )

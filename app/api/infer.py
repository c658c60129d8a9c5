"""POST /infer: a photo of a card in, the printing it shows out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from flasgger import swag_from
from flask import Blueprint, Flask, current_app, jsonify, make_response, request
from flask.typing import ResponseReturnValue

from app.api.auth import require_token
from app.api.errors import error_response
from app.catalog.access import get_store
from app.common import metrics
from app.common.settings import Settings
from app.recognition import service
from app.recognition.collector_line.records import Evidence
from app.recognition.collector_line.settle import answer_finish
from app.recognition.decode.uploads import ImageError
from app.recognition.features.extraction import release_freed_memory
from app.recognition.index.bundle import Bundle
from app.recognition.match.records import Candidate, Recognition
from app.recognition.params import PROFILES
from app.runtime.admission import Admission, Overloaded
from app.runtime.http_logging import annotate
from app.runtime.line_reader import LineReaderHolder
from app.runtime.model import ModelHolder, get_holder

bp = Blueprint("infer", __name__)
log = logging.getLogger(__name__)

SPECS = Path(__file__).parent / "specs"
View = TypeVar("View", bound=Callable[..., Any])


def documented_by(spec: str) -> Callable[[View], View]:
    """Flasgger's `swag_from` for a spec file of `specs/` (typed: the view keeps its type)."""
    return cast(Callable[[View], View], swag_from(str(SPECS / spec)))

IMAGE_FIELDS = ("roi_image", "image")
NO_MATCH = "No matching card found."
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off", "")


def init_app(app: Flask) -> None:
    """The recognition gate, made once with the app: made lazily by the first requests,
    two of them could each make one and let more recognitions run than allowed."""

    settings: Settings = app.config["SETTINGS"]
    app.extensions["admission"] = Admission(
        settings.max_concurrent_infer, settings.infer_queue_timeout,
        on_idle=release_freed_memory,
    )
    line_reader = LineReaderHolder(settings.read_collector_line, settings.second_line_reader)
    app.extensions["line_reader"] = line_reader
    (log.info if line_reader.available else log.warning)(
        "collector-line reading %s", line_reader.status)
    app.register_blueprint(bp)


def _admission() -> Admission:
    admission: Admission = current_app.extensions["admission"]
    return admission


def _multi_flag() -> bool | ResponseReturnValue:
    """`multi` from the form or the query string (true/false, 1/0, yes/no, on/off)."""
    raw = request.form.get("multi") if request.mimetype == "multipart/form-data" else None
    if raw is None:
        raw = request.args.get("multi")
    if raw is None:
        return False
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return error_response(400, f"multi must be true or false, got {raw[:40]!r}.")


def _read_upload() -> bytes | ResponseReturnValue:
    """The image bytes from a multipart field or a raw image body, or an error response."""
    if request.mimetype == "multipart/form-data":
        for name in IMAGE_FIELDS:
            upload = request.files.get(name)
            if upload is not None:
                data: bytes = upload.read()
                if not data:
                    return error_response(400, f"The '{name}' file is empty.")
                return data
        sent = sorted(set(request.files) | set(request.form))
        return error_response(
            400,
            "No image: send the photo in the multipart field 'roi_image' (or 'image'); "
            f"got fields {sent or 'none'}.",
        )
    if request.mimetype.startswith("image/") or request.mimetype == "application/octet-stream":
        data = request.get_data(cache=False)
        if not data:
            return error_response(400, "Empty request body: send the image bytes.")
        return data
    if not request.content_length:
        return error_response(
            400, "No image: send multipart field 'roi_image' or a raw image/* body."
        )
    return error_response(
        415,
        f"Unsupported content type {request.mimetype or 'none'!r}: send multipart/form-data "
        "with field 'roi_image', or a raw image/* body.",
    )


def _card_fields(card: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
    """Today's response fields, from the catalogue record when there is one."""
    if record is None:
        return {
            "predicted_card_id": card["id"],
            "predicted_card_name": card.get("name"),
            "finishes": card.get("finishes"),
            "set": card.get("set"),
            "set_name": card.get("set_name"),
            "prices": None,
            "image_uris": None,
            "collector_number": card.get("collector_number"),
        }
    return {
        "predicted_card_id": record["id"],
        "predicted_card_name": record["name"],
        "finishes": record["finishes"],
        "set": record["set_code"],
        "set_name": record["set_name"],
        "prices": record["prices"],
        "image_uris": _face_images(record, card.get("face", 0)),
        "collector_number": record["collector_number"],
    }


def _face_images(record: dict[str, Any], face: int) -> dict[str, Any] | None:
    if record.get("image_uris"):
        return dict(record["image_uris"])
    faces = record.get("card_faces") or []
    if 0 <= face < len(faces):
        uris = faces[face].get("image_uris")
        return dict(uris) if uris else None
    return None


def _alternative(candidate: Candidate) -> dict[str, Any]:
    card = candidate.card
    return {
        "card_id": card["id"],
        "name": card.get("name"),
        "set": card.get("set"),
        "collector_number": card.get("collector_number"),
        "face": card.get("face", 0),
        "confidence": round(float(candidate.confidence), 4),
        "inliers": int(candidate.inliers),
        "score": round(float(candidate.score), 4),
        "same_art": bool(candidate.same_art),
    }


def _records(ids: list[str]) -> tuple[dict[str, dict[str, Any]], bool]:
    """Catalogue records of the answered printings, and whether the catalogue answered."""
    try:
        return get_store().get_cards(ids), True
    except Exception as exc:  # the bundle alone can still answer
        log.warning("catalogue unavailable, answering from the bundle: %s", exc)
        return {}, False


# Scryfall's price keys of each finish
FINISH_PRICES = {
    "nonfoil": {"usd": "usd", "eur": "eur", "tix": "tix"},
    "foil": {"usd": "usd_foil", "eur": "eur_foil"},
    "etched": {"usd": "usd_etched"},
}


def _answer(
    result: Recognition, record: dict[str, Any] | None, evidence: Evidence
) -> dict[str, Any]:
    """One recognised card as the API shows it (the single answer, or one of `cards`)."""
    assert result.match is not None
    card = result.match.card
    body = _card_fields(card, record)
    finish = answer_finish(evidence, body["finishes"])
    prices = body["prices"] or {}
    body.update(
        face=card.get("face", 0),
        confidence=round(float(result.match.confidence), 4),
        ambiguous_printing=result.ambiguous_printing,
        printing_evidence=evidence.as_json(),
        finish=finish,
        finish_prices=(
            {key: prices.get(field) for key, field in FINISH_PRICES[finish].items()}
            if finish in FINISH_PRICES and record is not None else None
        ),
        inliers=int(result.match.inliers),
        alternatives=[_alternative(c) for c in result.alternatives],
        quad=result.quad,
        mirrored=result.mirrored,
    )
    return body


@bp.post("/infer")
@require_token
@documented_by("infer.yml")
def infer() -> ResponseReturnValue:
    """Recognise the card printing shown in a photo (spec: specs/infer.yml)."""
    started = time.perf_counter()
    settings: Settings = current_app.config["SETTINGS"]
    upload = _read_upload()
    if not isinstance(upload, bytes):
        return upload
    multi = _multi_flag()
    if not isinstance(multi, bool):
        return multi
    admission = _admission()
    try:
        with admission.slot():
            response = make_response(_recognise(upload, settings, started, multi))
    except Overloaded as exc:
        log.warning("infer refused: %s", exc)
        response = jsonify(error="Busy: too many recognitions in flight; retry shortly.")
        response.status_code = 503
        response.headers["Retry-After"] = "1"
        return response
    # once the answer is sent, not before: returning freed memory takes a few ms
    response.call_on_close(admission.when_idle)
    return response


def _recognise(
    data: bytes, settings: Settings, started: float, multi: bool
) -> ResponseReturnValue:
    # Decode first: a bad image is refused with its own 4xx even while no bundle is loaded.
    decode_start = time.perf_counter()
    try:
        decoded = service.decode_upload(
            data, PROFILES[settings.recognition_profile], max_pixels=settings.max_image_pixels,
            multi=multi,
        )
    except ImageError as exc:
        log.info("infer: image refused (%d): %s", exc.status, exc.message)
        return error_response(exc.status, exc.message)
    decode_ms = (time.perf_counter() - decode_start) * 1000
    holder: ModelHolder[Bundle] = get_holder()
    with holder.lease() as bundle:
        if bundle is None:
            metrics.INFER_REFUSED.labels("no_bundle").inc()
            response = jsonify(error=f"No descriptor bundle loaded yet: {holder.state.detail}")
            response.status_code = 503
            response.headers["Retry-After"] = "30"
            return response
        budget_ms = settings.infer_multi_time_budget_ms if multi else settings.infer_time_budget_ms
        outcome = service.recognise(
            bundle, data, decoded, max_pixels=settings.max_image_pixels,
            reader=current_app.extensions["line_reader"].get(), multi=multi,
            deadline=started + budget_ms / 1000,
        )
        version = bundle.version
        # which sets a limited catalogue holds: what a photo of another set is told (read
        # from the bundle once, and only for an answer that needs it)
        sets = (service.indexed_sets(bundle)
                if settings.refresh_sets and not outcome.answers else None)
    stage_ms = outcome.timings_ms
    if not outcome.answers:
        metrics.record_recognition(decode_ms, stage_ms, None)
        if sets is None:
            return error_response(404, NO_MATCH, index_version=version)
        return error_response(
            404,
            f"{NO_MATCH} The catalogue indexes only the sets {', '.join(sets)} "
            "(REFRESH_SETS); a card of another set cannot be recognised.",
            index_version=version, indexed_sets=sets,
        )

    results = [answer.result for answer in outcome.answers]
    evidences = [answer.evidence for answer in outcome.answers]
    ids = [r.match.card["id"] for r in results if r.match is not None]
    records, answered = _records(ids)
    answers = [
        _answer(result, records.get(card_id), evidence)
        for result, card_id, evidence in zip(results, ids, evidences, strict=True)
    ]
    timings = {"decode": round(decode_ms, 1)}
    timings.update({key: round(value, 1) for key, value in stage_ms.items()})
    timings["total"] = round((time.perf_counter() - started) * 1000, 1)
    metadata = "complete" if answered and all(i in records for i in ids) else "partial"
    extra = {"index_version": version, "metadata": metadata, "timings_ms": timings}
    # the request's outcome and its access line: the (strongest) card answered
    metrics.record_recognition(decode_ms, stage_ms, answers[0])
    for answer in answers:
        metrics.PRINTING_EVIDENCE.labels(answer["printing_evidence"]["source"]).inc()
    for evidence in evidences:
        if evidence.second_reader is not None:
            metrics.SECOND_LINE_READINGS.labels(evidence.second_reader).inc()
    annotate(card_id=answers[0]["predicted_card_id"], confidence=answers[0]["confidence"])
    if multi:
        annotate(cards=len(answers))
        return jsonify(cards=answers, count=len(answers), **extra)
    return jsonify({**answers[0], **extra})

"""POST /infer: a photo of a card in, the printing it shows out."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from app import metrics
from app.api.auth import require_token
from app.api.errors import error_response
from app.catalog import get_store
from app.recognition.bundle import Bundle
from app.recognition.imageio import ImageError, decode
from app.recognition.matcher import Candidate, Recognition, recognize
from app.recognition.scene import recognize_all
from app.runtime.admission import Admission, Overloaded
from app.runtime.http_logging import annotate
from app.runtime.model import ModelHolder, get_holder
from app.settings import Settings

bp = Blueprint("infer", __name__)
log = logging.getLogger(__name__)

IMAGE_FIELDS = ("roi_image", "image")
NO_MATCH = "No matching card found."
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off", "")


def init_app(app: Flask) -> None:
    """The recognition gate, made once with the app: made lazily by the first requests,
    two of them could each make one and let more recognitions run than allowed."""
    from app.recognition.features import release_freed_memory

    settings: Settings = app.config["SETTINGS"]
    app.extensions["admission"] = Admission(
        settings.max_concurrent_infer, settings.infer_queue_timeout,
        on_idle=release_freed_memory,
    )
    app.register_blueprint(bp)


def _admission() -> Admission:
    admission: Admission = current_app.extensions["admission"]
    return admission


def _query_side(settings: Settings, multi: bool) -> int:
    """The longest side a photo is decoded at: a scene of several cards needs more."""
    from app.recognition.params import PROFILES

    params = PROFILES[settings.recognition_profile]
    return params.multi_max_side if multi else params.query_max_side


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


def _answer(result: Recognition, record: dict[str, Any] | None) -> dict[str, Any]:
    """One recognised card as the API shows it (the single answer, or one of `cards`)."""
    assert result.match is not None
    card = result.match.card
    body = _card_fields(card, record)
    body.update(
        face=card.get("face", 0),
        confidence=round(float(result.match.confidence), 4),
        ambiguous_printing=result.ambiguous_printing,
        inliers=int(result.match.inliers),
        alternatives=[_alternative(c) for c in result.alternatives],
        quad=result.quad,
        mirrored=result.mirrored,
    )
    return body


@bp.post("/infer")
@require_token
def infer() -> ResponseReturnValue:
    """Recognise the card printing shown in a photo.
    ---
    tags: [recognition]
    summary: Recognise a Magic card printing from a photo
    description: >
      Send the photo as multipart field `roi_image` (as the core API does; `image` is also
      accepted) or as a raw `image/*` body. JPEG (incl. CMYK and EXIF-rotated), PNG (incl.
      16-bit and alpha), WebP, BMP, TIFF, HEIF (HEIC) and AVIF are decoded, the format read
      from the bytes (a raw body may be `application/octet-stream`). The answer is the best
      printing with a calibrated `confidence`, or 404 when no printing clears the decision rule.


      **Printings that share the art.** When several printings of the card share its art,
      they are compared where their references differ (frame, border, set symbol,
      collector line). When the photo cannot separate them -- typically printings that
      differ only by set symbol and collector number -- the answer is the most likely one
      with `ambiguous_printing: true`, and the other candidate printings come first in
      `alternatives` (`same_art: true`) with their own confidences; `confidence` is then the
      probability of this exact printing (the card itself is certain).


      **Several cards** (`multi=true`, as a form field or in the query string): every
      catalogued card in the photo, each once, strongest first, as
      `{"cards": [...], "count": n}`; each item has the single answer's fields, with its
      `quad`. Send the whole photo (up to 20 cards; `INFER_MULTI_TIME_BUDGET_MS` bounds the
      search). 404 when there is none.
    consumes: [multipart/form-data, image/jpeg, image/png, image/webp, image/bmp, image/tiff,
               image/heic, image/heif, image/avif, application/octet-stream]
    produces: [application/json]
    security: [{bearer: []}]
    parameters:
      - name: roi_image
        in: formData
        type: file
        required: false
        description: The photo (the core API's field name).
      - name: image
        in: formData
        type: file
        required: false
        description: The photo, alternative field name.
      - name: multi
        in: formData
        type: boolean
        required: false
        default: false
        description: Find every card in the photo (answer `MultiRecognition`).
      - name: multi
        in: query
        type: boolean
        required: false
        default: false
        description: Same as the form field, for raw image bodies.
    responses:
      200:
        description: The recognised printing (with `multi=true`, a `MultiRecognition`).
        schema: {$ref: '#/definitions/Recognition'}
        examples:
          application/json:
            predicted_card_id: 7931b4a0-5a42-5556-b7ea-18512bd9af6c
            predicted_card_name: Overlord of the Hauntwoods
            finishes: [nonfoil, foil]
            set: dsk
            set_name: Duskmourn House of Horror
            prices: {usd: "21.02", usd_foil: "23.10", eur: null, tix: null}
            image_uris: {normal: "https://cards.scryfall.io/normal/front/7/9/7931b4a0.jpg"}
            collector_number: "194"
            face: 0
            confidence: 0.97
            ambiguous_printing: false
            inliers: 143
            alternatives:
              - {card_id: 0c6148f7-01cb-4789-87a6-53d741f44ec2, name: Overlord of the
                 Hauntwoods, set: dsk, collector_number: "383", face: 0, confidence: 0.0,
                 inliers: 0, score: 1.21, same_art: true}
            quad: [[412.0, 388.5], [1630.2, 402.1], [1601.7, 2110.0], [395.3, 2096.4]]
            index_version: 20261126T020000000000Z-3fa1b2c4
            metadata: complete
            timings_ms: {decode: 31.2, recognize: 120.4, total: 155.0}
      400:
        description: No image, an empty or undecodable image, an image too small to read, or
          a `multi` value that is not true/false.
        schema: {$ref: '#/definitions/Error'}
        examples:
          application/json: {error: "No image: send the photo in the multipart field 'roi_image'
            (or 'image'); got fields none."}
      401: {$ref: '#/responses/Unauthorized'}
      403: {$ref: '#/responses/Forbidden'}
      404:
        description: No printing clears the decision rule.
        schema: {$ref: '#/definitions/Error'}
        examples:
          application/json: {error: No matching card found.}
      413:
        description: Body over MAX_CONTENT_LENGTH, or more pixels than MAX_IMAGE_PIXELS.
        schema: {$ref: '#/definitions/Error'}
      415:
        description: The body is not an image format the service decodes.
        schema: {$ref: '#/definitions/Error'}
      503:
        description: No bundle loaded yet, or all recognition slots busy (see Retry-After).
        schema: {$ref: '#/definitions/Error'}
        headers:
          Retry-After: {type: integer, description: Seconds to wait before retrying.}
    definitions:
      Error:
        type: object
        required: [error]
        properties:
          error: {type: string}
      Alternative:
        type: object
        properties:
          card_id: {type: string}
          name: {type: string, x-nullable: true}
          set: {type: string, x-nullable: true}
          collector_number: {type: string, x-nullable: true}
          face: {type: integer}
          confidence: {type: number}
          inliers: {type: integer}
          score: {type: number}
          same_art:
            type: boolean
            description: Another printing of the answer's art (true) or another card.
      MultiRecognition:
        type: object
        required: [cards, count, index_version]
        properties:
          cards:
            type: array
            description: Every card found, strongest first, each with its quad.
            items: {$ref: '#/definitions/Card'}
          count: {type: integer}
          index_version: {type: string}
          metadata: {type: string, enum: [complete, partial]}
          timings_ms: {type: object, additionalProperties: {type: number}}
      Recognition:
        description: One card (the Card fields) and the bundle that recognised it.
        allOf:
          - {$ref: '#/definitions/Card'}
          - type: object
            required: [index_version]
            properties:
              index_version: {type: string}
              metadata:
                type: string
                enum: [complete, partial]
                description: partial when the catalogue database did not answer; card
                  fields then come from the bundle alone.
              timings_ms: {type: object, additionalProperties: {type: number}}
      Card:
        type: object
        required: [predicted_card_id, predicted_card_name, confidence, ambiguous_printing]
        properties:
          predicted_card_id: {type: string, description: Scryfall id of the printing.}
          predicted_card_name: {type: string}
          finishes: {type: array, items: {type: string}, x-nullable: true}
          set: {type: string, x-nullable: true}
          set_name: {type: string, x-nullable: true}
          prices: {type: object, x-nullable: true, additionalProperties: {type: string,
                   x-nullable: true}}
          image_uris: {type: object, x-nullable: true, additionalProperties: {type: string}}
          collector_number: {type: string, x-nullable: true}
          face: {type: integer, description: Face index for double-faced cards (0 = front).}
          confidence:
            type: number
            description: >
              0-1, calibrated on real photos: among answers with confidence >= c, about a
              fraction c is right. With `ambiguous_printing`, the probability of this exact
              printing (the card is certain).
          ambiguous_printing:
            type: boolean
            description: The photo shows this card but cannot tell which of the printings
              sharing its art it is (e.g. they differ only by set symbol and collector
              number); the other candidate printings lead `alternatives`.
          inliers: {type: integer, description: RANSAC inliers supporting the match.}
          alternatives:
            type: array
            description: Next candidates, best first; printings sharing the art come first.
            items: {$ref: '#/definitions/Alternative'}
          quad:
            type: array
            x-nullable: true
            description: The card's four corners in the query image (x, y), clockwise from
              its top-left.
            items: {type: array, items: {type: number}}
          mirrored: {type: boolean, description: "The photo shows the card mirrored
              left-right (front camera, webcam preview); `quad` is in the photo's pixels."}
    """
    started = time.perf_counter()
    settings: Settings = current_app.config["SETTINGS"]
    upload = _read_upload()
    if not isinstance(upload, bytes):
        return upload
    multi = _multi_flag()
    if not isinstance(multi, bool):
        return multi
    try:
        with _admission().slot():
            return _recognise(upload, settings, started, multi)
    except Overloaded as exc:
        log.warning("infer refused: %s", exc)
        response = jsonify(error="Busy: too many recognitions in flight; retry shortly.")
        response.status_code = 503
        response.headers["Retry-After"] = "1"
        return response


def _recognise(
    data: bytes, settings: Settings, started: float, multi: bool
) -> ResponseReturnValue:
    # Decode first: a bad image is refused with its own 4xx even while no bundle is loaded.
    decode_start = time.perf_counter()
    try:
        # Huge JPEGs are decoded at 1/2..1/8 size straight away; recognition would shrink
        # them anyway, and a 12 MP photo decoded in full costs time and 200 MB of RAM.
        decoded = decode(
            data, max_pixels=settings.max_image_pixels, max_side=_query_side(settings, multi)
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
        if multi:
            scene = recognize_all(
                bundle,
                decoded.image,
                quad_scale=float(decoded.reduction),
                deadline=started + settings.infer_multi_time_budget_ms / 1000,
            )
            results, stage_ms = scene.cards, scene.timings_ms
        else:
            single = recognize(
                bundle,
                decoded.image,
                quad_scale=float(decoded.reduction),
                deadline=started + settings.infer_time_budget_ms / 1000,
            )
            results = [single] if single.match is not None else []
            stage_ms = single.timings_ms
        version = bundle.version
    if not results:
        metrics.record_recognition(decode_ms, stage_ms, None)
        return error_response(404, NO_MATCH, index_version=version)

    ids = [r.match.card["id"] for r in results if r.match is not None]
    records, answered = _records(ids)
    answers = [_answer(r, records.get(card_id)) for r, card_id in zip(results, ids, strict=True)]
    timings = {"decode": round(decode_ms, 1)}
    timings.update({key: round(value, 1) for key, value in stage_ms.items()})
    timings["total"] = round((time.perf_counter() - started) * 1000, 1)
    metadata = "complete" if answered and all(i in records for i in ids) else "partial"
    extra = {"index_version": version, "metadata": metadata, "timings_ms": timings}
    # the request's outcome and its access line: the (strongest) card answered
    metrics.record_recognition(decode_ms, stage_ms, answers[0])
    annotate(card_id=answers[0]["predicted_card_id"], confidence=answers[0]["confidence"])
    if multi:
        annotate(cards=len(answers))
        return jsonify(cards=answers, count=len(answers), **extra)
    return jsonify({**answers[0], **extra})

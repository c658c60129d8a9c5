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
from app.recognition.imageio import ImageError, decode
from app.recognition.matcher import Candidate, recognize
from app.runtime.admission import Admission, Overloaded
from app.runtime.http_logging import annotate
from app.runtime.model import get_holder
from app.settings import Settings

bp = Blueprint("infer", __name__)
log = logging.getLogger(__name__)

IMAGE_FIELDS = ("roi_image", "image")
NO_MATCH = "No matching card found."


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


def _query_side(settings: Settings) -> int:
    from app.recognition.params import PROFILES

    return PROFILES[settings.recognition_profile].query_max_side


def _read_upload() -> bytes | ResponseReturnValue:
    """The image bytes from a multipart field or a raw image body, or an error response."""
    if request.mimetype == "multipart/form-data":
        for name in IMAGE_FIELDS:
            upload = request.files.get(name)
            if upload is not None:
                data = upload.read()
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
    }


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
      16-bit and alpha), WebP, BMP and TIFF are decoded. The answer is the best printing with a
      calibrated `confidence`, or 404 when no printing clears the decision rule.
    consumes: [multipart/form-data, image/jpeg, image/png, image/webp, image/bmp, image/tiff]
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
    responses:
      200:
        description: The recognised printing.
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
            inliers: 143
            alternatives:
              - {card_id: 0c6148f7-01cb-4789-87a6-53d741f44ec2, name: Overlord of the
                 Hauntwoods, set: dsk, collector_number: "383", face: 0, confidence: 0.21,
                 inliers: 40, score: 0.3}
            quad: [[412.0, 388.5], [1630.2, 402.1], [1601.7, 2110.0], [395.3, 2096.4]]
            index_version: 20261126T020000000000Z-3fa1b2c4
            metadata: complete
            timings_ms: {decode: 31.2, recognize: 120.4, total: 155.0}
      400:
        description: No image, an empty or undecodable image, or an image too small to read.
        schema: {$ref: '#/definitions/Error'}
        examples:
          application/json: {error: "No image: send the photo in the multipart field 'roi_image'
            (or 'image'); got fields none."}
      401:
        description: No bearer token (only when INFER_API_TOKENS is set).
        schema: {$ref: '#/definitions/Error'}
      403:
        description: Wrong bearer token.
        schema: {$ref: '#/definitions/Error'}
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
      Recognition:
        type: object
        required: [predicted_card_id, predicted_card_name, confidence, index_version]
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
              fraction c is right.
          inliers: {type: integer, description: RANSAC inliers supporting the match.}
          alternatives:
            type: array
            description: Next candidates; printings sharing the art come first.
            items: {$ref: '#/definitions/Alternative'}
          quad:
            type: array
            x-nullable: true
            description: The card's four corners in the query image (x, y), clockwise from
              its top-left.
            items: {type: array, items: {type: number}}
          index_version: {type: string}
          metadata:
            type: string
            enum: [complete, partial]
            description: partial when the catalogue database did not answer; card fields then
              come from the bundle alone.
          timings_ms: {type: object, additionalProperties: {type: number}}
    """
    started = time.perf_counter()
    settings: Settings = current_app.config["SETTINGS"]
    upload = _read_upload()
    if not isinstance(upload, bytes):
        return upload
    try:
        with _admission().slot():
            return _recognise(upload, settings, started)
    except Overloaded as exc:
        log.warning("infer refused: %s", exc)
        response = jsonify(error="Busy: too many recognitions in flight; retry shortly.")
        response.status_code = 503
        response.headers["Retry-After"] = "1"
        return response


def _recognise(data: bytes, settings: Settings, started: float) -> ResponseReturnValue:
    # Decode first: a bad image is refused with its own 4xx even while no bundle is loaded.
    decode_start = time.perf_counter()
    try:
        # Huge JPEGs are decoded at 1/2..1/8 size straight away; recognition would shrink
        # them anyway, and a 12 MP photo decoded in full costs time and 200 MB of RAM.
        decoded = decode(
            data, max_pixels=settings.max_image_pixels, max_side=_query_side(settings)
        )
    except ImageError as exc:
        log.info("infer: image refused (%d): %s", exc.status, exc.message)
        return error_response(exc.status, exc.message)
    decode_ms = (time.perf_counter() - decode_start) * 1000
    holder = get_holder()
    with holder.lease() as bundle:
        if bundle is None:
            metrics.INFER_REFUSED.labels("no_bundle").inc()
            response = jsonify(error=f"No descriptor bundle loaded yet: {holder.state.detail}")
            response.status_code = 503
            response.headers["Retry-After"] = "30"
            return response
        result = recognize(
            bundle,  # type: ignore[arg-type]
            decoded.image,
            quad_scale=float(decoded.reduction),
            deadline=started + settings.infer_time_budget_ms / 1000,
        )
        version = bundle.version
    if result.match is None:
        metrics.record_recognition(decode_ms, result.timings_ms, None)
        return error_response(404, NO_MATCH, index_version=version)

    card = result.match.card
    metadata = "complete"
    record: dict[str, Any] | None = None
    try:
        record = get_store().get_cards([card["id"]]).get(card["id"])
        if record is None:
            metadata = "partial"
    except Exception as exc:  # the bundle alone can still answer
        log.warning("catalogue unavailable, answering from the bundle: %s", exc)
        metadata = "partial"
    body: dict[str, Any] = _card_fields(card, record)
    timings = {"decode": round(decode_ms, 1)}
    timings.update({key: round(value, 1) for key, value in result.timings_ms.items()})
    timings["total"] = round((time.perf_counter() - started) * 1000, 1)
    body.update(
        face=card.get("face", 0),
        confidence=round(float(result.match.confidence), 4),
        inliers=int(result.match.inliers),
        alternatives=[_alternative(c) for c in result.alternatives],
        quad=result.quad,
        index_version=version,
        metadata=metadata,
        timings_ms=timings,
    )
    metrics.record_recognition(decode_ms, result.timings_ms, body)
    annotate(card_id=body["predicted_card_id"], confidence=body["confidence"])
    return jsonify(body)

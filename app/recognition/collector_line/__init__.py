"""The collector_line stage: the exact printing, from the collector line printed on the card.

Half of all printings share their art, frame and border with another printing
(docs/design-notes.md, "Printings that look alike"): the photo's appearance can only guess
among them. What tells them apart is the collector line at the bottom of the card:
`M 0194` / `DSK • EN` on 2015 and later frames (rarity, collector number, set code,
language; a ★ instead of the • on foils), the number alone (`141/274`) on 2003 frames,
little or nothing on older ones.

Here, once a card is recognised, its quad (the verified homography's corners, in the
uploaded photo's pixels) rectifies the line's region from the photo decoded at enough
resolution (not the reduced query image), Tesseract reads it (a line none of its readings
decides is read once more by a second engine, PP-OCRv6), and the reading is decoded
against what the catalogue allows: the set codes, collector numbers and languages of the
printings that share the recognised art. A reading that names exactly one of them settles
the answer's printing (its `set`, `collector_number`, `lang` and, from the foil mark, its
finish); otherwise the decision by appearance stands.

Modules, in reading order:

- `records.py`: `Printing` (a catalogued printing the line may name), `Evidence` (what the
  line said: the answer's `printing_evidence`), the card heights from which a line and its
  foil mark are read.
- `region.py`: where each `frame` prints its line; the line rectified flat from the quad,
  its contrast levelled.
- `tesseract.py`: the first engine, Tesseract through tesserocr (`Reader`, a pool of
  instances).
- `rapidocr.py`: the second engine, PP-OCRv6 through RapidOCR, for lines Tesseract's
  readings leave undecided.
- `decode.py`: a reading's words -> set code, collector_number and lang, matched against
  the printings that share the art, up to OCR's confusions.
- `foil_mark.py`: ★ or •, told by its shape.
- `read.py`: `read_line`, the readings tried in turn (Tesseract, then the second engine)
  and the `Evidence` they add up to.
- `settle.py`: `settle`, the line's `Evidence` applied to a recognised answer (what the
  API calls).
"""

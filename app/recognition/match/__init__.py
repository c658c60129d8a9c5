"""Which card a photo shows, and which printing by look:

- `vote.py`         FAISS neighbours vote for cards; the candidates to verify
- `geometry.py`     RANSAC homography per candidate; corners, overlaps, the answer's quad
- `photometric.py`  the photo warped onto a candidate's thumbnail and compared (grey, colour)
- `appearance.py`   the odds of each printing of one picture, by where they differ
- `decide.py`       the calibrated confidence: the art first, then the printing
- `card.py`         one card: passes coarse to fine, the mirrored search (`recognize`)
- `scene.py`        every card of a photo (`recognize_all`)
- `records.py`      Candidate, Recognition, Verified; `explain.py`: why a reference lost
"""

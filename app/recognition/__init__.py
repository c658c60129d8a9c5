"""Card recognition: the bytes of a photo in, the printing it shows out.

`service.py` is the one entry point (`decode_upload`, `recognise`); the stages below it, in
the order a photo goes through them, each import only the ones before:

- `params.py`         every tuned number, in profiles; recorded in each bundle
- `decode/`           uploads checked and decoded (JPEG, PNG, WebP, HEIC, AVIF), reduced
- `features/`         SIFT keypoints as RootSIFT, which descriptors to keep, card layouts
- `index/`            the descriptor bundle: its format, full and incremental build, reading
- `match/`            votes, RANSAC, photometric check: one card, every card, the printing by look
- `collector_line/`   the line printed on the card read, and the exact printing settled
"""

"""The index stage: the descriptor bundle a serving process searches, and how it is made.

A bundle is a directory (format 4, `bundle.py` describes it file by file): a FAISS IVF-PQ
index over the references' RootSIFT descriptors, with ids `slot << LOCAL_BITS | local`; the
stop-word sample; per-card shards (keypoints, thumbnails, the slot of each printing's picture
reference); the id map (Scryfall id, face, name, set, collector_number per slot) and a
manifest with the parameters, counts and every file's checksum. A full build extracts every
reference and trains the index; a nightly refresh that changes a few % of the printings
extends the release before it instead (incremental build). Serving opens a bundle
read-only, its index lists mapped and shared by every process on a host.

Modules, in the order a build runs:

- `thumbnails.py`    the gray and colour thumbnails each printing keeps, encoded.
- `pictures.py`      one reference per picture: which printings share one indexed reference.
- `spool.py`         step 1: prepare each reference, spool its candidates and thumbnails to
                     disk; which printings of a picture are extracted.
- `training.py`      step 2: nlist, the factory string, two-level k-means, IVF-PQ training.
- `stop_words.py`    step 3: the stop-word sample, stop flags, the descriptors each card
                     keeps, added to the index block by block.
- `shards.py`        step 4: the per-card h5 shards.
- `writing.py`       the index file, the id map, the manifest last; the fresh directory.
- `mapped_lists.py`  fast-scan lists in a layout every serving process maps and shares.
- `build.py`         the full build (`build_bundle`): the entry point.
- `incremental.py`   the incremental build (`incremental_plan`, `build_incremental`,
                     `FullBuildNeeded`).
- `bundle.py`        the reader: open, verify and read a bundle as served.
"""

"""What a photo or a reference is described by: CLAHE-equalised SIFT keypoints turned into
RootSIFT, for references and queries alike (`extraction.py`); which of a reference's
keypoints to describe and keep (`selection.py`); and where a printing differs from the others
of its layout, what the photometric check weighs (`layout.py`)."""

"""Uploads decoded safely: the format sniffed from the bytes (not the declared type), the
declared size checked before decoding (a 413 costs no memory), EXIF rotation applied, huge
JPEGs decoded reduced (`uploads.py`); HEIC and AVIF through Pillow's plugins (`heif.py`)."""

#!/usr/bin/env bash
# Make Tesseract's English model (eng.traineddata) available for reading collector lines.
#
# The engine is the tesserocr wheel (it bundles libtesseract); the model is Debian's
# tesseract-ocr-eng package, nothing is downloaded at run time. Called by `make install`:
# found -> nothing to do; missing -> apt-get install (as root, --no-install-recommends: the
# tesseract-ocr CLI is not needed); otherwise a warning, and the service starts without
# line reading and says so in its start-up log.
set -u
for dir in "${TESSDATA_PREFIX:-}" /usr/share/tesseract-ocr/5/tessdata \
           /usr/share/tesseract-ocr/4.00/tessdata /usr/share/tessdata /usr/local/share/tessdata; do
    if [ -n "$dir" ] && [ -f "$dir/eng.traineddata" ]; then
        exit 0
    fi
done
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[install] installing Debian's tesseract-ocr-eng (collector-line OCR model)" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            tesseract-ocr-eng >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            tesseract-ocr-eng >/dev/null 2>&1 || true
    fi
    [ -f /usr/share/tesseract-ocr/5/tessdata/eng.traineddata ] && exit 0
fi
echo "[install] WARNING: no eng.traineddata: install Debian's tesseract-ocr-eng (or set" \
     "TESSDATA_PREFIX); until then printings are told by appearance only" >&2
exit 0

"""A reading's text decoded against the catalogue: the set code, collector_number and lang
it shows, and the one printing of the recognised art it names, if any.

What is decoded is text (the engines' words), not an image. The candidates are the
printings that share the recognised art (all of them, not only the best-voted few): their
set codes, collector numbers and languages are all a reading is compared with, up to OCR's
usual confusions ("OSK" for "DSK", "O" for "0"). A reading that names exactly one of them
decides the printing; a reading that names none, several, or one the photo's appearance
rules out, changes nothing. A number is read exactly, or one digit off when something else
printed on the line vouches for it (the set code read whole; on a 2003 frame, the
copyright's year or its "Coast"), never when another printing's number is read whole.
"""

from __future__ import annotations

import re

from app.recognition.collector_line.records import (
    FRAMES_WITHOUT_SET_CODE,
    Evidence,
    Printing,
)
from app.recognition.collector_line.tesseract import Word

PADDED_DIGITS = 3  # the least digits of a number on a frame that prints the set code
# Digits a number read next to its set code may be off by and still name that set's printing
# (decode_line; measured on the collector-line benchmark: a "9" in 10 px type is read "0",
# "O" or "C" on a third of the synthetic twins' lines at 800 px)
NUMBER_SLIPS = 1

UNREAD_LANG = "?"  # Evidence.lang of a language code that was seen but not read
# Language codes as printed on the line -> Scryfall's `lang`
PRINTED_LANGS = {
    "EN": "en", "DE": "de", "FR": "fr", "IT": "it", "ES": "es", "SP": "es", "PT": "pt",
    "JP": "ja", "JA": "ja", "KR": "ko", "KO": "ko", "RU": "ru", "CS": "zhs", "CT": "zht",
    "PH": "ph",
}
# What OCR confuses in a field that must be digits
_AS_DIGIT = str.maketrans({"O": "0", "D": "0", "Q": "0", "I": "1", "L": "1", "Z": "2",
                           "S": "5", "B": "8", "G": "6", "T": "7"})
_DIGIT_SLIPS = frozenset("ODQILZSBGT")
# Glyphs OCR takes for one another in set codes ("DSK" read "OSK"): each class -> one letter
_CONFUSABLE = str.maketrans({"0": "O", "D": "O", "Q": "O", "U": "O", "1": "I", "L": "I",
                             "J": "I", "T": "I", "5": "S", "8": "B", "2": "Z", "6": "G",
                             "V": "Y"})


def _digit_runs(text: str, min_digits: int = 1) -> set[int]:
    """Collector numbers a reading may show: digit runs, and tokens that are digits up to
    OCR's letter-for-digit slips ("OL26" is 0126; a rarity letter may lead: "M0194"),
    leaving out the set size after a "/"; only those of `min_digits` characters or more."""
    numbers: set[int] = set()
    for token in re.findall(r"[A-Z0-9/]+", text.upper()):
        part = token.split("/")[0]  # "141/274": 274 is the set's size
        numbers.update(int(run) for run in re.findall(r"\d+", part) if len(run) >= min_digits)
        for core in (part, part[1:]) if part[:1].isalpha() else (part,):  # "M0194"
            if len(core) >= min_digits and any(ch.isdigit() for ch in core) and all(
                ch.isdigit() or ch in _DIGIT_SLIPS for ch in core
            ):
                numbers.add(int(core.translate(_AS_DIGIT)))
    return numbers


def _slipped_digits(chunk: str, min_digits: int) -> list[str]:
    """The digits `chunk` (squeezed, upper case) may be as a whole or without its first
    character (a rarity letter), OCR's letter slips taken for digits even when no true
    digit was read ("OLOO" is 0100); only those of `min_digits` characters or more."""
    return [core.translate(_AS_DIGIT) for core in (chunk, chunk[1:])
            if len(core) >= min_digits and all(ch.isdigit() or ch in _DIGIT_SLIPS for ch in core)]


def _glued_number(prefix: str, min_digits: int) -> set[int]:
    """The collector number in what precedes the set code, in its word or the word before:
    "COLIS" before "RP1" is rarity C and 0115."""
    return {int(core) for core in _slipped_digits(prefix, min_digits)}


def _numbers_before_size(text: str) -> set[int]:
    """Collector numbers of a 2003-frame line whose "/" OCR dropped or misread: `95/274`
    read "95274" or "951274" is 95 before a set size of three digits (a "/" read "1", "7" or
    "I" leaves one more character). Runs that look like the copyright's year (1993-2039) are
    no number and a set size: "2012" is never card 2 of a set of 012."""
    numbers: set[int] = set()
    # a "1" in this small serif type is often read "£"
    for token in re.findall(r"[A-Z0-9]+", text.upper().replace("£", "1")):
        if not any(ch.isdigit() for ch in token) or not all(
            ch.isdigit() or ch in _DIGIT_SLIPS for ch in token
        ):
            continue
        digits = token.translate(_AS_DIGIT)
        if len(digits) == 4 and 1993 <= int(digits) <= 2039:
            continue
        for cut in range(1, len(digits) - 2):
            rest = digits[cut:]
            if len(rest) == 3 or (len(rest) == 4 and token[cut] in "17I"):
                numbers.add(int(digits[:cut]))
    return numbers


def _squeezed(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def confusable(text: str) -> str:
    return _squeezed(text).translate(_CONFUSABLE)


def decode_line(words: list[Word], printings: list[Printing]) -> Evidence:
    """Match a reading against the printings it may name (see the module doc).

    A printing is named when its collector number is read and, on frames that print it, its
    set code (compared up to OCR's usual confusions, "OSK" for "DSK"); the set code alone
    (the number misread) names nothing. The language is the printed code of the word after
    the set code. With several printings named, or none, nothing is decided (`slot` None)."""
    text = " ".join(w.text for w in words)
    # frames that print the set code print the number zero-padded ("084/249", "0194"): a
    # shorter run is part of a number, or no number ("4" read from a blurred "0335")
    padded = _digit_runs(text, PADDED_DIGITS)
    fraction_numbers = _digit_runs(text) | _numbers_before_size(text)
    tokens = [confusable(w.text) for w in words]
    evidence = Evidence(text=text or None)
    named: list[Printing] = []
    set_word: int | None = None
    near_set: dict[int, int] = {}  # slot -> the word its set code was read in
    for printing in printings:
        code = confusable(printing.set)
        at = next((i for i, token in enumerate(tokens) if code and code in token), None)
        if at is not None and printing.frame not in FRAMES_WITHOUT_SET_CODE:
            near_set[printing.slot] = at
        if at is not None and (set_word is None or len(code) > len(_squeezed(evidence.set or ""))):
            set_word = at
            evidence.set = printing.set.lower()
        needs_set = printing.frame not in FRAMES_WITHOUT_SET_CODE
        readable = padded if needs_set else fraction_numbers
        if at is not None:
            # the number glued to the set code ("C0115RP1" read "COLISRP1"), or the word
            # just before it (the number's line ends where the set code's begins)
            readable = readable | _glued_number(
                _squeezed(words[at].text)[: tokens[at].find(code)], PADDED_DIGITS)
            if at > 0:
                readable = readable | _glued_number(_squeezed(words[at - 1].text),
                                                    PADDED_DIGITS)
        has_number = printing.number is not None and printing.number in readable
        if has_number and (at is not None or not needs_set):
            named.append(printing)
    if near_set:
        # a line showing a set code is the line of a frame that prints one: its number
        # names no printing of a frame without ("C 00260 RP1", 0026 with a 0 too many, is
        # not 260/274)
        named = [p for p in named if p.slot in near_set]
    if set_word is not None:
        evidence.lang = _language_after(words, set_word, confusable(evidence.set or ""))
        if evidence.lang == UNREAD_LANG:
            evidence.lang, evidence.lang_unread = None, True
        evidence.foil_word = set_word
    if not named:
        named = _named_by_set(words, tokens, printings, near_set, padded)
    if not named and not near_set:
        named = _named_by_copyright(text, printings)
    # the same set and number in several languages is one printing until the language says
    if len({(p.set, p.number) for p in named}) != 1:
        return evidence
    chosen = named[0]
    evidence.set = chosen.set.lower() if chosen.frame not in FRAMES_WITHOUT_SET_CODE else (
        evidence.set)
    evidence.collector_number = chosen.collector_number
    same_lang = [p for p in named if evidence.lang is not None and p.lang == evidence.lang]
    evidence.slot = (same_lang or [chosen])[0].slot
    return evidence


def _named_by_set(
    words: list[Word],
    tokens: list[str],
    printings: list[Printing],
    near_set: dict[int, int],
    padded: set[int],
) -> list[Printing]:
    """The printing named by a set code read whole and a number read with a slip: when the
    set code read is that of one printing of the art (one number: a set that holds the art
    twice needs its number read exactly), the digits printed just before the code (glued to
    it, or in one of the two words before, a rarity letter dropped) are within
    `NUMBER_SLIPS` digits of its number (`0092` read "OOO2", `0342` "COS42"), and no number
    read names a printing of another set. Both readings must then have gone wrong, and in
    agreement, for a wrong printing to be named."""
    by_set = [p for p in printings if p.slot in near_set]
    if len({(p.set, p.number) for p in by_set}) != 1:
        return []  # no set code read, several sets', or a set with several of these numbers
    if any(p.number in padded for p in printings if p.set != by_set[0].set):
        return []  # the number of another set's printing: the readings disagree
    code = confusable(by_set[0].set)
    at = near_set[by_set[0].slot]
    chunks = [_squeezed(words[at].text)[: tokens[at].find(code)]]
    chunks += [_squeezed(word.text) for word in words[max(0, at - 2): at]]
    cores = [core for chunk in chunks for core in _slipped_digits(chunk, PADDED_DIGITS)]
    return [p for p in by_set if p.number is not None and any(
        _slips(core, p.number) <= NUMBER_SLIPS for core in cores)]


# The copyright line's last word as OCR reads it in small serif type: "Coast", "Goast",
# "Cowst", "Coust", "Cook", "Coe"
_COAST = re.compile(r"[CG][OA][A-Z]{1,3}")


def _named_by_copyright(text: str, printings: list[Printing]) -> list[Printing]:
    """The 2003-frame printing named by its copyright line read with a slip in the number:
    the frame prints no set code, but its copyright line ("™ & © 2012 Wizards of the
    Coast 141/274") stands in for one. After the line's year (a printing's release year or
    the year before) or its last word ("Coast", read "Goast", "Cowst", "Cook"), whichever
    is read first, when the digits that begin a token are within `NUMBER_SLIPS` of the
    number of exactly one 2003-frame printing ("1322778" for `122/274`, "T71/" for
    `171/274`; a first letter that is no digit is left out: "P11274"), that printing of the
    year read (any year when none was) is named, unless another printing's number was read
    whole. Numbers under three digits are not matched with a slip (one wrong digit of two
    leaves too little)."""
    old = [p for p in printings if p.frame == "2003" and p.number is not None
           and p.number >= 100]
    if not old:
        return []
    words = text.upper().replace("£", "1").split()
    year_read: set[int] = set()
    anchor = None
    for n, word in enumerate(words):
        digits = word.translate(_AS_DIGIT)
        years = {int(digits[i: i + 4]) for i in range(len(digits) - 3)
                 if digits[i: i + 4].isdigit() and 1993 <= int(digits[i: i + 4]) <= 2039}
        if years and not year_read:
            year_read = years
            anchor = n if anchor is None else anchor
        elif anchor is None and _COAST.fullmatch(re.sub(r"[^A-Z]", "", word)):
            anchor = n  # the first: later words of the art or frame may look alike ("CaP")
    if anchor is None:
        return []
    numbers = []
    for word in words[anchor + 1:]:
        squeezed = re.sub(r"[^A-Z0-9]", "", word)
        for core in (squeezed, squeezed[1:]):
            if core and all(ch.isdigit() or ch in _DIGIT_SLIPS for ch in core) and any(
                    ch.isdigit() for ch in core):
                numbers.append(core.translate(_AS_DIGIT))
                break

    def near_number(number: int) -> bool:
        digits = len(str(number))
        return any(len(core) > digits and _slips(core[:digits], number) <= NUMBER_SLIPS
                   for core in numbers)

    near = [p for p in old if (not year_read or year_read & {p.year, (p.year or 0) - 1})
            and near_number(p.number or 0)]
    if len({(p.set, p.number) for p in near}) != 1:
        return []
    whole = {int(core) for core in numbers} | {int(core[:-3]) for core in numbers
                                               if len(core) > 3}
    if any(p.number in whole for p in printings if p.number != near[0].number):
        return []  # another printing's number was read whole
    return near


def _slips(core: str, number: int) -> int:
    """Digits in which `core` (digits as read) differs from `number` zero-padded to its
    length; more than any slip when the number has more digits than were read."""
    target = str(number).zfill(len(core))
    if len(target) != len(core):
        return len(target)
    return sum(a != b for a, b in zip(core, target, strict=True))


PRINTED_CONFUSABLE = {confusable(code): lang for code, lang in PRINTED_LANGS.items()}


def _language_after(words: list[Word], at: int, code: str) -> str | None:
    """The Scryfall `lang` of the printed language code after the set code `code` (in its
    confusable form) in word `at`: the rest of that word when OCR joined them ("DSKEN"),
    else the next word of two letters or more (the foil mark between them is a word of its
    own or dropped). Compared up to OCR's confusions ("OE" is "DE")."""
    word = confusable(words[at].text)
    rest = [word[word.find(code) + len(code):]]
    rest += [confusable(w.text) for w in words[at + 1: at + 3]]
    for chunk in rest:
        if len(chunk) < 2:
            continue
        for printed in sorted(PRINTED_CONFUSABLE, key=len, reverse=True):
            if chunk.startswith(printed):
                return PRINTED_CONFUSABLE[printed]
        if len(chunk) == 3 and chunk[1:] in PRINTED_CONFUSABLE:
            return PRINTED_CONFUSABLE[chunk[1:]]  # the foil mark read as a letter: "XEN"
        if len(chunk) == 2 and chunk[1] == "N":
            return "en"  # of the printed codes only EN ends in N: "ON", "tn" are its slips
        # two letters in the language's place that are no language code: some language,
        # maybe not English (a German "DE" read "OC")
        return UNREAD_LANG if len(chunk) == 2 and chunk.isalpha() else None
    return None

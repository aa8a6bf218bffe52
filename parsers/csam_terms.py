"""Wordings of child sexual abuse material in a person's report, found once per report.

A match is a *signal* (``possible_csam``), never a verdict: the desk confirms. So the matcher favours
recall on the wordings people really write (and the separators obfuscators insert) while refusing the
ordinary-text collisions that would mark every shell transcript: "CP" alone is not a term ("cp -r dir",
"CP 12345", "C.P." are ordinary); only the unambiguous phrases "cp link(s)", "cp video(s)", "cp pic(s)".

Term syntax (the ``[csam] terms`` list): a plain wording, matched word-bounded; a trailing ``*`` makes it a
stem ("kinderporno*" matches "Kinderpornografie", "Kinderpornos"). Both the text and the terms are NFKC-
and case-folded; zero-width characters and soft hyphens are removed; between the letters of a word one
separator (space, hyphen, dot, underscore, asterisk, middle dot) is tolerated ("k.i.n.d.e.r", "CS-AM"),
between words up to three non-word characters or none ("child-porn", "childporn").

Chinese and Japanese are written without spaces, so there is no word boundary to check: for a term in
those scripts a substring match is the boundary we can have (``\\b`` would never fire inside a CJK run).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

# Default wordings, as a native speaker writes them in a report. Folded at compile time, so case and
# width do not matter here.
DEFAULT_TERMS: tuple[str, ...] = (
    # English and the abbreviations the field uses (child sexual abuse/exploitation material)
    "csam",
    "csem",
    "child sexual abuse material*",
    "child sexual abuse image*",
    "child sexual abuse video*",
    "child sexual exploitation material*",
    "child abuse material*",
    "child abuse image*",
    "child abuse video*",
    "child porn*",
    "kiddie porn*",
    "kiddy porn*",
    "cp link*",
    "cp video*",
    "cp pic*",
    # German
    "kinderporno*",
    "kinderpornografie",
    "kinderpornographie",
    "kinderpornografisch*",
    "kinderpornographisch*",
    "kindesmissbrauchsdarstellung*",
    "darstellungen sexuellen kindesmissbrauchs",
    "darstellung sexuellen kindesmissbrauchs",
    "missbrauchsdarstellung*",
    # French
    "pédopornographi*",
    "pedopornographi*",
    "pornographie infantile",
    "pornographie enfantine",
    "abus sexuels sur enfants",
    "abus sexuel sur enfant*",
    "images d'abus sexuels",
    # Spanish
    "pornografía infantil",
    "pornografia infantil",  # also Portuguese; Spanish without the accent
    "material de abuso sexual infantil",
    "abuso sexual infantil",
    "explotación sexual infantil",
    "pedopornografía",
    # Portuguese
    "pornografia infantil",
    "abuso sexual de crianças",
    "abuso sexual de menores",
    "material de abuso sexual de crianças",
    "pedopornografia",
    # Russian
    "детская порнография",
    "детской порнографии",
    "детскую порнографию",
    "детское порно",
    "детского порно",
    "сексуальное насилие над детьми",
    "сексуального насилия над детьми",
    "педопорн*",
    # Chinese (simplified and traditional)
    "儿童色情",
    "兒童色情",
    "儿童性虐待",
    "兒童性虐待",
    "儿童性剥削",
    "兒童性剝削",
    "幼女色情",
    # Japanese
    "児童ポルノ",
    "児童性的虐待",
    "児童買春",
    "チャイルドポルノ",
    "ロリ動画",
)

# Invisible characters obfuscators insert inside a word: zero-width space/non-joiner/joiner, LRM/RLM,
# word joiner, BOM, soft hyphen, Mongolian vowel separator.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad\u180e"))
_INTRA_SEP = r"[\s\-_.*·]?"
_WORD_SEP = r"[\W_]{0,3}"


def fold(text: str) -> str:
    """NFKC + casefold + invisible characters removed: the one form both terms and text are compared in."""
    return unicodedata.normalize("NFKC", text).casefold().translate(_INVISIBLE)


def _is_spaceless_script(ch: str) -> bool:
    """Han, Hiragana, Katakana: scripts written without spaces, where no word boundary exists."""
    o = ord(ch)
    return (
        0x3040 <= o <= 0x30FF  # Hiragana, Katakana
        or 0x3400 <= o <= 0x4DBF  # CJK Extension A
        or 0x4E00 <= o <= 0x9FFF  # CJK Unified Ideographs
        or 0xF900 <= o <= 0xFAFF  # CJK Compatibility Ideographs
        or 0x31F0 <= o <= 0x31FF  # Katakana Phonetic Extensions
    )


def _term_pattern(term: str) -> str | None:
    """One term as a regex; None for a term that folds to nothing (a blank config entry)."""
    folded = fold(term).strip()
    stem = folded.endswith("*")
    folded = folded.rstrip("*").strip()
    words = folded.split()
    if not words:
        return None
    parts = []
    for word in words:
        if all(_is_spaceless_script(c) for c in word):
            parts.append(re.escape(word))
        else:
            parts.append(_INTRA_SEP.join(re.escape(c) for c in word))
    body = _WORD_SEP.join(parts)
    head = "" if _is_spaceless_script(folded[0]) else r"(?<!\w)"
    tail = "" if stem or _is_spaceless_script(folded[-1]) else r"(?!\w)"
    return head + body + tail


class TermMatcher:
    """A term list compiled once into one regex; ``match`` is called on every person's report."""

    def __init__(self, terms: Sequence[str] = DEFAULT_TERMS) -> None:
        self.terms: tuple[str, ...] = tuple(dict.fromkeys(terms))  # configured order, duplicates dropped
        alternatives = []
        self._names: dict[str, str] = {}
        for i, term in enumerate(self.terms):
            pattern = _term_pattern(term)
            if pattern is None:
                continue
            name = f"t{i}"
            self._names[name] = term
            alternatives.append(f"(?P<{name}>{pattern})")
        self._regex = re.compile("|".join(alternatives)) if alternatives else None

    def match(self, text: str) -> list[str]:
        """The configured terms found in ``text`` (each once, in order of first appearance)."""
        if self._regex is None or not text:
            return []
        found: dict[str, None] = {}
        for m in self._regex.finditer(fold(text)):
            if m.lastgroup is not None:
                found[self._names[m.lastgroup]] = None
        return list(found)


def match_terms(text: str, terms: Sequence[str] = DEFAULT_TERMS) -> list[str]:
    """One-off convenience; the intake should build a ``TermMatcher`` once and reuse it."""
    return TermMatcher(terms).match(text)

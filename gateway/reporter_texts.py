"""The gateway's words to reporters, in their language (issue 21): which language, which text, and the one
way placeholders are filled.

Texts ship as `gateway/texts/<lang>.toml` (en, de, fr, es, pt, ru, zh, ja); an operator overrides any key
with `[reply] templates_dir/<lang>.toml`, and adds or replaces reply templates there (`<name>.txt`,
`<name>.<lang>.txt`). Placeholders are `{name}` from a fixed list of our own values (case ID, dates, counts,
digests, our addresses and links): a template cannot reach a subject, a text or a filename, so no template,
shipped or written by an operator, can quote a report, CSAM or not. There is no attribute access, no
indexing, no format spec: `render` is a regular expression over a dict, not `str.format`.

The language: the report's `Content-Language` when it names one of ours, else what py3langid says of the
first 4 KB of the text when it is confident and one of ours, else `[confirm] default_language`.
"""

from __future__ import annotations

import functools
import logging
import re
import tomllib
from pathlib import Path
from typing import Any

from parsers.types import ParsedMessage

log = logging.getLogger("abuse_gateway.reporter_texts")

LANGUAGES = ("en", "de", "fr", "es", "pt", "ru", "zh", "ja")
PLACEHOLDERS = frozenset(
    {
        "case_id",
        "reply_to",
        "received_date",
        "message_count",
        "link_count",
        "attachment_count",
        "attachment_lines",
        "sha256",
        "state",
        "state_date",
        "status_line",
        "status_link",
        "receipt",
    }
)
REPLY_TEMPLATES = ("need-more-info", "action-taken", "not-ours")
_SHIPPED = Path(__file__).resolve().parent / "texts"
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.\[\]!:]*)\}")
_DETECT_PREFIX = 4096  # characters of the report's text the identifier reads: bounded cost per message
_DETECT_MIN = 20  # fewer letters than this is no evidence of a language
_DETECT_CONFIDENCE = 0.75  # normalised probability py3langid must reach


class TemplateError(ValueError):
    """A template names a placeholder we do not fill, or cannot be read."""


def check_template(text: str, where: str) -> str:
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - PLACEHOLDERS)
    if unknown:
        raise TemplateError(f"{where}: unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}")
    return text


def render(text: str, values: dict[str, str]) -> str:
    """Fill `{name}` from `values` (our own strings only); anything else in braces is left as written."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


@functools.lru_cache(maxsize=64)
def _load_toml(path: str, mtime: float) -> dict[str, str]:
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    return {str(k): check_template(str(v), f"{path} {k}") for k, v in data.items() if isinstance(v, str)}


def _toml(path: Path) -> dict[str, str]:
    try:
        return _load_toml(str(path), path.stat().st_mtime)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TemplateError(f"{path}: {exc}") from exc


def texts(language: str, templates_dir: str | None) -> dict[str, str]:
    """Every key for `language`: English, then the shipped language, then the operator's overrides."""
    language = language if language in LANGUAGES else "en"
    merged = dict(_toml(_SHIPPED / "en.toml"))
    if language != "en":
        merged.update(_toml(_SHIPPED / f"{language}.toml"))
    if templates_dir:
        try:
            merged.update(_toml(Path(templates_dir) / f"{language}.toml"))
        except TemplateError as exc:
            # A broken override must not stop every confirmation in that language: ours go out instead,
            # and the log names the file to fix.
            log.error("reporter texts override ignored: %s", exc)
    return merged


def reply_template(name: str, language: str, templates_dir: str | None) -> tuple[str, str]:
    """(subject, body) of reply template `name` in `language` (else its plain version)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", name):
        raise TemplateError(f"template name {name!r}: lower-case letters, digits and dashes only")
    places = [Path(templates_dir)] if templates_dir else []
    places.append(_SHIPPED / "replies")
    for place in places:
        for candidate in (place / f"{name}.{language}.txt", place / f"{name}.txt"):
            if candidate.is_file():
                return split_subject(check_template(candidate.read_text(encoding="utf-8"), str(candidate)))
    raise TemplateError(f"no reply template {name!r} (shipped: {', '.join(REPLY_TEMPLATES)})")


def available_templates(templates_dir: str | None) -> list[str]:
    """Reply template names the desk may choose (shipped and the operator's), for a form's choice list."""
    names = set(REPLY_TEMPLATES)
    if templates_dir and Path(templates_dir).is_dir():
        for path in Path(templates_dir).glob("*.txt"):
            name = path.name.split(".")[0]
            if re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", name):
                names.add(name)
    return sorted(names)


def split_subject(text: str) -> tuple[str, str]:
    """A desk text's `Subject:` first line, if any, and the rest (the blank line after it dropped)."""
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    first, _newline, rest = text.partition("\n")
    if first.lower().startswith("subject:"):
        return first[8:].strip(), rest.lstrip("\n")
    return "", text


# ---- which language ------------------------------------------------------------------------------------


def _content_language(parsed: ParsedMessage) -> str | None:
    value = parsed.header("Content-Language") or ""
    for tag in value.split(","):
        primary = tag.strip().split("-")[0].split("_")[0].lower()
        if primary in LANGUAGES:
            return primary
    return None


@functools.lru_cache(maxsize=1)
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> str | None:
    """One of our languages when the identifier is confident of it, else None."""
    sample = text[:_DETECT_PREFIX]
    if sum(ch.isalpha() for ch in sample) < _DETECT_MIN:
        return None
    language, probability = _identifier().classify(sample)
    return language if language in LANGUAGES and probability >= _DETECT_CONFIDENCE else None


def report_language(parsed: ParsedMessage) -> str | None:
    """The report's language when it tells (header, or a confident identifier), else None."""
    return _content_language(parsed) or detect_language(parsed.text or parsed.html_text or "")


def choose_language(parsed: ParsedMessage, default: str) -> str:
    return report_language(parsed) or (default if default in LANGUAGES else "en")

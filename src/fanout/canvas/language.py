"""The language a canvas is written in, to label what fanout adds in the learner's words.

Read from the text of the canvas's text nodes and group labels, after leaving out what is
not prose: fenced and inline code, URLs, link targets, LaTeX. Then:

- **Japanese** when kana make up at least 10 % of its CJK characters: Japanese prose is
  about half kana, so even a canvas of kanji-heavy headings with a few sentences passes
  (one `の` in a short heading is enough), while a Chinese canvas that quotes one
  Japanese name does not.
  The katakana middle dot `・` and the long-vowel mark `ー` are not counted: Chinese uses
  the dot between the parts of foreign names.
- **Korean** when Hangul outnumbers the other CJK characters.
- **Chinese** when the CJK text is not clearly outweighed by Latin words: a CJK character
  counts as 2/3 of a word (Chinese words average about 1.5 characters), and the canvas is
  read as Latin-script only when its Latin words are more than twice its CJK words. A
  Chinese canvas full of English terms (`TCP`, `event loop`, `asyncio`) stays Chinese.
- Otherwise a **Latin-script** language by its commonest function words: `de`, `fr`, `it`,
  `es`, else `en` (also for a canvas with no text). A blueprint's `title` in that language
  is used if it has one, else its English title.
"""

from __future__ import annotations

import re
from collections import Counter

from fanout.canvas.model import Canvas

#: characters of a canvas looked at (enough to tell; bounded for 3,000-node canvases)
SAMPLE_CHARS = 20_000
#: share of kana among CJK characters from which a canvas is Japanese
KANA_SHARE = 0.10
#: Latin words per CJK word above which a canvas with CJK text is read as Latin-script
LATIN_OVER_CJK = 2.0
CJK_CHARS_PER_WORD = 1.5

# not prose: code, URLs, the target of a Markdown or wiki link, LaTeX
_NOT_PROSE = re.compile(
    r"```.*?(?:```|\Z)|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|https?://\S+|\]\([^)]*\)|\[\[[^\]]*\]\]",
    re.DOTALL,
)
_LATIN_WORD = re.compile(r"[^\W\d_]+")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: a few of each language's commonest short words: enough to tell them apart
_FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "en": _words("the and is are of to in a an what why how that this it with for not be by on"),
    "de": _words(
        "der die das und ist sind nicht ein eine einen mit von zu den dem wie was warum "
        "auch für auf sich ich es im"
    ),
    "fr": _words(
        "le la les et est sont un une des du que qui pourquoi comment pas pour dans ce "
        "il elle au aux"
    ),
    "it": _words(
        "il lo la gli le e è sono un una di del della che perché come non per nel con si ci"
    ),
    "es": _words("el la los las y es son un una de del que por qué cómo no para en con se su al"),
}


def canvas_language(canvas: Canvas) -> str:
    """`zh`, `ja`, `ko`, `de`, `fr`, `it`, `es` or `en` (also for a canvas with no text)."""
    parts: list[str] = []
    seen = 0
    for node in canvas.nodes:
        text = node.text if node.type == "text" else node.label if node.type == "group" else None
        if not text:
            continue
        parts.append(text[: SAMPLE_CHARS - seen])
        seen += len(text)
        if seen >= SAMPLE_CHARS:
            break
    return text_language("\n".join(parts))


def text_language(text: str) -> str:
    """The language of `text`: see the module docstring."""
    prose = _NOT_PROSE.sub(" ", text)
    han = kana = hangul = 0
    for ch in prose:
        code = ord(ch)
        if 0x3041 <= code <= 0x309F or 0x30A1 <= code <= 0x30FA or 0xFF66 <= code <= 0xFF6F:
            kana += 1
        elif 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF:
            hangul += 1
        elif 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF:
            han += 1
    words = [w.lower() for w in _LATIN_WORD.findall(prose) if w.isascii() or _is_latin(w)]
    cjk = han + kana + hangul
    if cjk and len(words) <= LATIN_OVER_CJK * cjk / CJK_CHARS_PER_WORD:
        if kana and kana >= KANA_SHARE * cjk:
            return "ja"
        if hangul > han + kana:
            return "ko"
        return "zh"
    return _latin_language(words)


def _is_latin(word: str) -> bool:
    # Latin letters with accents (ä, è, ß...); not Cyrillic, Greek or CJK
    return all(ord(ch) < 0x250 for ch in word)


def _latin_language(words: list[str]) -> str:
    counts: Counter[str] = Counter()
    for word in words:
        for language, common in _FUNCTION_WORDS.items():
            if word in common:
                counts[language] += 1
    # letters only one language uses settle what the short words leave open
    letters = "".join(words)
    counts["de"] += 2 * sum(letters.count(c) for c in "äöüß")
    counts["fr"] += 2 * sum(letters.count(c) for c in "çêâîôœ")
    counts["es"] += 2 * letters.count("ñ")
    counts["it"] += 2 * sum(letters.count(c) for c in "ìò")
    if not counts:
        return "en"
    best = max(counts.values())
    # a tie goes to English, then in the order above: the blueprints' fallback is English
    return next(lang for lang in ("en", "de", "fr", "it", "es") if counts[lang] == best)

"""The language a canvas is written in, to label what fanout adds in the learner's words.

A count of scripts over the text of the canvas's text nodes and group labels: kana means
Japanese, Hangul Korean, other CJK ideographs Chinese; Latin letters English (the
blueprints' fallback: a German or Italian canvas gets the English names, not the ids).
"""

from __future__ import annotations

from fanout.canvas.model import Canvas

#: characters of a canvas looked at (enough to tell; bounded for 3,000-node canvases)
SAMPLE_CHARS = 20_000


def canvas_language(canvas: Canvas) -> str:
    """`zh`, `ja`, `ko` or `en` (also for a canvas with no text)."""
    han = kana = hangul = latin = 0
    seen = 0
    for node in canvas.nodes:
        text = node.text if node.type == "text" else node.label if node.type == "group" else None
        if not text:
            continue
        for ch in text[: SAMPLE_CHARS - seen]:
            code = ord(ch)
            if 0x3040 <= code <= 0x30FF:
                kana += 1
            elif 0xAC00 <= code <= 0xD7AF:
                hangul += 1
            elif 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF:
                han += 1
            elif ch.isalpha() and ch.isascii():
                latin += 1
        seen += len(text)
        if seen >= SAMPLE_CHARS:
            break
    # one CJK character carries about as much as a Latin word: weigh them so
    cjk = han + kana + hangul
    if cjk * 4 < latin or cjk == 0:
        return "en"
    if kana * 10 >= cjk:
        return "ja"
    if hangul > han:
        return "ko"
    return "zh"

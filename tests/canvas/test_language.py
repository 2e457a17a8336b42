"""The canvas's language (issue 12 point 3): mixed canvases as learners write them.

Japanese kana must not read as Chinese, a few English words (or code) in Chinese text keep
it Chinese, and Latin-script canvases are told apart by their function words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fanout.canvas import load_canvas
from fanout.canvas.language import canvas_language, text_language
from fanout.canvas.workflow import edge_labels

from .support import write_canvas

SIZE = {"width": 400, "height": 200}


def cards(*texts: str, group: str | None = None) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {
            "id": f"n{k}",
            "type": "text",
            "text": t,
            "x": 0,
            "y": k * 300,
            "width": 400,
            "height": 200,
        }
        for k, t in enumerate(texts)
    ]
    if group is not None:
        nodes.append(
            {"id": "g", "type": "group", "label": group, "x": -40, "y": -40, "width": 480,
             "height": 300 * len(texts) + 40}
        )  # fmt: skip
    return {"nodes": nodes, "edges": []}


# Each canvas is what a learner of that language writes, with the other languages mixed
# in the way they are in real study notes.
CANVASES: list[tuple[str, dict[str, Any], str]] = [
    (
        # Japanese headings are often all kanji; the sentences under them carry the kana
        "日本語: kanji headings, a few sentences",
        cards(
            "線形代数 第三章 固有値問題",
            "行列式の計算",
            "固有値とは何か？",
            "固有ベクトルは線形変換で向きが変わらないベクトルです。",
            group="線形代数",
        ),
        "ja",
    ),
    (
        "日本語: katakana terms and English",
        cards(
            "データ構造とアルゴリズム",
            "スタックとキューの違いを説明してください",
            "Stack は LIFO、Queue は FIFO です。",
        ),
        "ja",
    ),
    (
        "中文: English terms and code",
        cards(
            "TCP 三次握手 (three-way handshake) 的过程是什么？",
            "客户端发送 SYN，服务器回复 SYN-ACK，客户端再发送 ACK。",
            "用 Python 的 asyncio 实现 event loop：\n```python\nimport asyncio\n"
            "async def main():\n    await asyncio.sleep(1)\n```",
            "参考 https://developer.mozilla.org/en-US/docs/Glossary/TCP_handshake",
        ),
        "zh",
    ),
    (
        # the katakana middle dot joins the parts of foreign names in Chinese
        "中文: foreign names with ・ and one Japanese title",
        cards(
            "约翰・冯・诺依曼提出了存储程序计算机的结构。",
            "艾伦・图灵与图灵机",
            "动画《ドラえもん》在中国叫哆啦A梦，讲的是一只来自未来的机器猫如何帮助大雄。"
            "这部作品影响了很多人对科技的想象。",
        ),
        "zh",
    ),
    (
        "中文: a mostly-English formula sheet with Chinese notes",
        cards("$\\lim_{x \\to 0} \\frac{\\sin x}{x} = 1$", "重要极限", "洛必达法则 L'Hôpital"),
        "zh",
    ),
    (
        "English with a Chinese term",
        cards(
            "What is the difference between a stack and a queue?",
            "A stack is last in, first out; a queue is first in, first out. "
            "In Chinese a stack is called 栈.",
            "Why does an in-order traversal of a binary search tree give a sorted list?",
        ),
        "en",
    ),
    (
        "Deutsch with English terms",
        cards(
            "Was ist der Unterschied zwischen einem Stack und einer Queue?",
            "Ein Stack ist LIFO, eine Queue ist FIFO. Die Operationen heißen push und pop.",
            "Warum ist die Laufzeit von Quicksort im Mittel O(n log n)?",
            group="Datenstrukturen",
        ),
        "de",
    ),
    (
        "Italiano",
        cards(
            "Che cos'è un insieme delle parti?",
            "È l'insieme di tutti i sottoinsiemi di un insieme, compreso quello vuoto.",
            "Perché la cardinalità è 2 alla n?",
        ),
        "it",
    ),
    ("한국어", cards("스택과 큐의 차이는 무엇인가요?", "스택은 후입선출입니다."), "ko"),
    ("no text", cards("", ""), "en"),
]


@pytest.mark.parametrize(("name", "data", "language"), CANVASES, ids=[c[0] for c in CANVASES])
def test_a_mixed_canvas_reads_as_the_language_its_learner_writes(
    vault: Path, name: str, data: dict[str, Any], language: str
) -> None:
    path = write_canvas(vault, f"{name.split(':')[0]}.canvas", data)
    assert canvas_language(load_canvas(path)) == language


def test_kana_are_never_read_as_chinese() -> None:
    # one short sentence: far fewer kana than a whole page, still Japanese
    assert text_language("微分方程式の解法") == "ja"
    assert text_language("確率論における大数の法則と中心極限定理について") == "ja"
    # the dot and the long-vowel mark alone are not Japanese
    assert text_language("列夫・托尔斯泰的小说") == "zh"
    assert text_language("哈利・波特ー系列") == "zh"


def test_the_line_between_chinese_and_english_is_the_word_count() -> None:
    # 6 CJK characters are about 4 words: up to 8 English words stay Chinese
    assert text_language("我们今天学习 stack queue heap tree graph list map set") == "zh"
    assert (
        text_language("我们今天学习 " + "stack queue heap tree graph list map set array " * 2)
        == "en"
    )


def test_japanese_and_latin_canvases_get_english_labels_and_chinese_ones_chinese() -> None:
    assert edge_labels("ja", [])["explanations"] == "Notes"
    assert edge_labels("de", [])["explanations"] == "Notes"
    assert edge_labels("zh", [])["explanations"] == "学习笔记"

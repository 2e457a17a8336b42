"""A corpus of varied canvases, written as Obsidian writes them, deterministic from a seed.

Fourteen shapes seen in real vaults: a Chinese mind map, a left-to-right outline, a study
grid, a skill tree of 160 x 40 nodes, the original system's layout (rows 400 px apart),
an architecture diagram with nested groups and file/link nodes, tight groups, hex and
numbered colours, a kanban board, a scatter of sticky notes, a wide timeline, a two-node
canvas, a 3,000-node map with 300 targets, and a lecture of long Chinese notes. Yellow
(colour "3") text nodes hold the learner's answers: they are the targets.

Obsidian's own style: tab indent, one node or edge object per line, `"nodes":[`, no
spaces after `:` or `,`, no newline at the end.

    .venv/bin/python bench/canvas_corpus.py OUT_DIR [--seed 7] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Node = dict[str, Any]
Edge = dict[str, Any]
Data = dict[str, list[dict[str, Any]]]

TOPICS = [
    "命题",
    "集合",
    "关系",
    "函数",
    "图论",
    "树",
    "排序",
    "递归",
    "矩阵",
    "向量",
    "特征值",
    "极限",
    "导数",
    "积分",
    "概率",
    "期望",
    "栈",
    "队列",
    "哈希",
    "堆",
]
ANSWERS = (
    "我的理解：{t}就是把问题拆成更小的部分。",
    "{t}：我觉得它和前面学的概念很像，但条件更强。",
    "用自己的话说，{t}描述的是一种对应关系。",
    "{t}的关键在于边界情况，我还不太确定。",
)
YELLOW = "3"


class _Ids:
    """Obsidian-like 16-hex ids from the seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def __call__(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"


def _text(nid: str, text: str, x: float, y: float, w: float, h: float, **extra: Any) -> Node:
    node: Node = {"id": nid, "type": "text", "text": text, "x": round(x), "y": round(y)}
    node.update({"width": round(w), "height": round(h)})
    node.update(extra)
    return node


def _group(nid: str, label: str, x: float, y: float, w: float, h: float, **extra: Any) -> Node:
    node: Node = {"id": nid, "type": "group", "x": round(x), "y": round(y)}
    node.update({"width": round(w), "height": round(h), "label": label})
    node.update(extra)
    return node


def _edge(eid: str, a: str, b: str, sides: tuple[str, str] = ("right", "left"), **kw: Any) -> Edge:
    return {"id": eid, "fromNode": a, "fromSide": sides[0], "toNode": b, "toSide": sides[1], **kw}


def _answer(rng: random.Random, topic: str) -> str:
    return rng.choice(ANSWERS).format(t=topic)


def _topic(rng: random.Random) -> str:
    return rng.choice(TOPICS)


def mind_map(rng: random.Random, ids: _Ids) -> Data:
    """A central idea, 6 branches, 4-5 leaves each on a circle; some leaves are answers."""
    nodes, edges = [_text("root", "离散数学 思维导图", -150, -40, 300, 80, color="6")], []
    for b in range(6):
        ang = b * math.tau / 6
        bx, by = math.cos(ang) * 500, math.sin(ang) * 360
        bid = ids()
        nodes.append(_text(bid, f"## {TOPICS[b]}", bx - 125, by - 30, 250, 60, color="4"))
        edges.append(_edge(ids(), "root", bid, ("bottom", "top")))
        for k in range(rng.randint(4, 5)):
            la = ang + (k - 2) * 0.22
            lx, ly = math.cos(la) * 1050, math.sin(la) * 820
            lid = ids()
            yellow = rng.random() < 0.45
            text = _answer(rng, TOPICS[b]) if yellow else f"{TOPICS[b]} 的例子 {k + 1}"
            extra = {"color": YELLOW} if yellow else {}
            nodes.append(_text(lid, text, lx - 125, ly - 30, 250, 60, **extra))
            edges.append(_edge(ids(), bid, lid))
    return {"nodes": nodes, "edges": edges}


def outline_tree(rng: random.Random, ids: _Ids) -> Data:
    """A left-to-right outline: chapter -> section -> point, point nodes 80 px apart."""
    nodes, edges = [], []
    y = 0.0
    for c in range(4):
        cid = ids()
        sec_nodes = []
        for s in range(3):
            sid = ids()
            ys = y
            for p in range(rng.randint(2, 4)):
                pid = ids()
                yellow = rng.random() < 0.35
                text = _answer(rng, _topic(rng)) if yellow else f"要点 {c + 1}.{s + 1}.{p + 1}"
                nodes.append(
                    _text(pid, text, 900, y, 320, 60, **({"color": YELLOW} if yellow else {}))
                )
                edges.append(_edge(ids(), sid, pid))
                y += 80
            sec_nodes.append(sid)
            nodes.append(_text(sid, f"第 {s + 1} 节", 450, (ys + y - 80) / 2, 250, 60))
            edges.append(_edge(ids(), cid, sid))
            y += 40
        nodes.append(_text(cid, f"# 第 {c + 1} 章", 0, y - 300, 300, 80, color="5"))
        y += 60
    return {"nodes": nodes, "edges": edges}


def study_grid(rng: random.Random, ids: _Ids) -> Data:
    """Question (red) above the answer (yellow), 6 per row, a group per row."""
    nodes, edges = [], []
    for row in range(4):
        nodes.append(_group(ids(), f"第 {row + 1} 组", -40, row * 560 - 40, 6 * 520 + 40, 520))
        for col in range(6):
            x, y = col * 520, row * 560
            q, a = ids(), ids()
            t = _topic(rng)
            nodes.append(_text(q, f"问题：什么是{t}？", x, y, 400, 140, color="1"))
            nodes.append(_text(a, _answer(rng, t), x, y + 200, 400, 200, color=YELLOW))
            edges.append(_edge(ids(), q, a, ("bottom", "top"), label="个人理解"))
    return {"nodes": nodes, "edges": edges}


def skill_tree(rng: random.Random, ids: _Ids) -> Data:
    """Tiers of 160 x 40 skills, 240 px apart across and 160 px down, prerequisites as edges."""
    nodes, edges = [], []
    tiers: list[list[str]] = []
    for tier in range(8):
        row = []
        width = rng.randint(8, 14)
        for k in range(width):
            nid = ids()
            yellow = rng.random() < 0.12
            text = _answer(rng, _topic(rng)) if yellow else f"技能 {tier}-{k}"
            colour = YELLOW if yellow else rng.choice(["4", "5", "#2ecc71"])
            nodes.append(_text(nid, text, k * 240 - width * 120, tier * 160, 160, 40, color=colour))
            row.append(nid)
            if tiers:
                parent = tiers[-1][min(len(tiers[-1]) - 1, k * len(tiers[-1]) // width)]
                edges.append(_edge(ids(), parent, nid, ("bottom", "top")))
        tiers.append(row)
    return {"nodes": nodes, "edges": edges}


def original_system(rng: random.Random, ids: _Ids) -> Data:
    """The original system's layout: question left, answer right, rows 400 px apart."""
    nodes, edges = [], []
    for row in range(10):
        q, a = f"question-{ids()[:6]}", f"yellow-{ids()[:6]}"
        t = _topic(rng)
        nodes.append(_text(q, f"什么是{t}？", 0, row * 400, 400, 300, color="2"))
        nodes.append(_text(a, _answer(rng, t), 450, row * 400, 350, 150, color=YELLOW))
        edges.append(_edge(f"edge-{q}-{a}", q, a))
    return {"nodes": nodes, "edges": edges}


def architecture(rng: random.Random, ids: _Ids) -> Data:
    """Nested groups (system > service > module), file and link nodes, hex colours."""
    nodes, edges = [], []
    nodes.append(_group(ids(), "系统 System", 0, 0, 2600, 1500, color="#8e44ad"))
    for s in range(3):
        sx = 60 + s * 860
        nodes.append(_group(ids(), f"服务 {s + 1}", sx, 60, 800, 1380, color="#3498db"))
        for m in range(2):
            my = 120 + m * 660
            nodes.append(_group(ids(), f"模块 {s + 1}.{m + 1}", sx + 40, my, 720, 600))
            fid, lid, aid = ids(), ids(), ids()
            nodes.append(
                {
                    "id": fid,
                    "type": "file",
                    "file": f"设计/服务{s + 1}-模块{m + 1}.md",
                    "x": sx + 80,
                    "y": my + 60,
                    "width": 300,
                    "height": 200,
                }
            )
            nodes.append(
                {
                    "id": lid,
                    "type": "link",
                    "url": f"https://example.org/docs/{s}/{m}",
                    "x": sx + 420,
                    "y": my + 60,
                    "width": 300,
                    "height": 120,
                }
            )
            nodes.append(
                _text(aid, _answer(rng, "接口"), sx + 80, my + 320, 300, 120, color=YELLOW)
            )
            edges.append(_edge(ids(), fid, aid, ("bottom", "top")))
            edges.append(_edge(ids(), fid, lid))
    return {"nodes": nodes, "edges": edges}


def tight_groups(rng: random.Random, ids: _Ids) -> Data:
    """Groups hugging their nodes (20 px padding), 60 px apart, an answer in each."""
    nodes, edges = [], []
    for g in range(12):
        gx, gy = (g % 4) * 760, (g // 4) * 460
        nodes.append(_group(ids(), f"卡片组 {g + 1}", gx, gy, 700, 400, color=str(g % 6 + 1)))
        q, a = ids(), ids()
        t = _topic(rng)
        nodes.append(_text(q, f"{t} 的定义", gx + 20, gy + 20, 660, 160))
        nodes.append(_text(a, _answer(rng, t), gx + 20, gy + 220, 660, 160, color=YELLOW))
        edges.append(_edge(ids(), q, a, ("bottom", "top")))
    return {"nodes": nodes, "edges": edges}


def colours(rng: random.Random, ids: _Ids) -> Data:
    """Every colour spelling: "1".."6", lower and upper hex; a legend of 40 x 40 swatches."""
    nodes, edges = [], []
    palette = ["1", "2", "4", "5", "6", "#ff8800", "#FFD700", "#a0c4ff"]
    for k, c in enumerate(palette):
        nodes.append(_text(ids(), "", -200, k * 60, 40, 40, color=c))
    for k in range(24):
        x, y = (k % 6) * 420, (k // 6) * 300
        yellow = k % 3 == 1
        text = _answer(rng, _topic(rng)) if yellow else f"卡片 {k}"
        colour = YELLOW if yellow else rng.choice(palette)
        nodes.append(_text(ids(), text, x, y, 320, 180, color=colour))
    return {"nodes": nodes, "edges": edges}


def kanban(rng: random.Random, ids: _Ids) -> Data:
    """Columns as groups, cards stacked 20 px apart inside them."""
    nodes, edges = [], []
    for c, name in enumerate(["待学", "在学", "复习", "已掌握"]):
        cx = c * 420
        cards = rng.randint(5, 8)
        nodes.append(_group(ids(), name, cx, 0, 360, 40 + cards * 120))
        for k in range(cards):
            yellow = rng.random() < 0.3
            text = _answer(rng, _topic(rng)) if yellow else f"{name} 卡片 {k + 1}"
            extra = {"color": YELLOW} if yellow else {}
            nodes.append(_text(ids(), text, cx + 20, 20 + k * 120, 320, 100, **extra))
    return {"nodes": nodes, "edges": edges}


def scatter(rng: random.Random, ids: _Ids) -> Data:
    """Sticky notes of mixed sizes dropped where there was room."""
    nodes: list[Node] = []
    placed: list[tuple[float, float, float, float]] = []
    while len(nodes) < 45:
        w, h = rng.choice([(250, 60), (250, 120), (400, 200), (180, 180)])
        x, y = rng.uniform(0, 3200), rng.uniform(0, 2200)
        if any(x < px + pw + 60 and px < x + w + 60 and y < py + ph + 60 and py < y + h + 60
               for px, py, pw, ph in placed):  # fmt: skip
            continue
        placed.append((x, y, w, h))
        yellow = rng.random() < 0.3
        text = _answer(rng, _topic(rng)) if yellow else f"便签 {len(nodes) + 1}"
        nodes.append(_text(ids(), text, x, y, w, h, **({"color": YELLOW} if yellow else {})))
    return {"nodes": nodes, "edges": []}


def timeline(rng: random.Random, ids: _Ids) -> Data:
    """One long row of events, 300 px apart, answers hanging below some of them."""
    nodes, edges = [], []
    prev = None
    for k in range(30):
        eid = ids()
        nodes.append(_text(eid, f"{1900 + 4 * k} 年", k * 300, 0, 240, 60, color="5"))
        if prev:
            edges.append(_edge(ids(), prev, eid))
        prev = eid
        if k % 4 == 1:
            aid = ids()
            nodes.append(
                _text(aid, _answer(rng, _topic(rng)), k * 300, 120, 240, 100, color=YELLOW)
            )
            edges.append(_edge(ids(), eid, aid, ("bottom", "top")))
    return {"nodes": nodes, "edges": edges}


def two_nodes(rng: random.Random, ids: _Ids) -> Data:
    """The smallest useful canvas: a question and the answer."""
    q, a = ids(), ids()
    return {
        "nodes": [
            _text(q, "什么是递归？", 0, 0, 250, 60),
            _text(a, _answer(rng, "递归"), 0, 120, 250, 60, color=YELLOW),
        ],
        "edges": [_edge(ids(), q, a, ("bottom", "top"))],
    }


def huge(rng: random.Random, ids: _Ids) -> Data:
    """3,000 nodes: 300 clusters of 10 (a group-less topic card and its details), one answer
    per cluster, clusters on a 20 x 15 grid."""
    nodes, edges = [], []
    for c in range(300):
        cx, cy = (c % 20) * 1300, (c // 20) * 900
        hub = ids()
        nodes.append(_text(hub, f"主题 {c}", cx, cy, 250, 60, color="4"))
        for k in range(8):
            did = ids()
            nodes.append(_text(did, f"细节 {c}.{k}", cx + (k % 4) * 280, cy + 100 + (k // 4) * 100,
                               250, 60))  # fmt: skip
            edges.append(_edge(ids(), hub, did, ("bottom", "top")))
        aid = ids()
        nodes.append(_text(aid, _answer(rng, _topic(rng)), cx + 300, cy, 250, 60, color=YELLOW))
        edges.append(_edge(ids(), hub, aid))
    return {"nodes": nodes, "edges": edges}


def lecture(rng: random.Random, ids: _Ids) -> Data:
    """Long Chinese notes (tall nodes) in two columns, answers between them."""
    nodes, edges = [], []
    body = "这一段讲的是" + "，".join(rng.sample(TOPICS, 8)) + "之间的联系。" * 3
    for k in range(8):
        nid, aid = ids(), ids()
        nodes.append(_text(nid, f"## 第 {k + 1} 讲\n\n{body}", 0, k * 700, 600, 560))
        nodes.append(_text(aid, _answer(rng, _topic(rng)), 700, k * 700 + 100, 400, 240,
                           color=YELLOW))  # fmt: skip
        edges.append(_edge(ids(), nid, aid))
    return {"nodes": nodes, "edges": edges}


CORPUS: dict[str, Callable[[random.Random, _Ids], Data]] = {
    "思维导图": mind_map,
    "大纲树": outline_tree,
    "学习网格": study_grid,
    "技能树": skill_tree,
    "原系统": original_system,
    "架构图": architecture,
    "紧凑分组": tight_groups,
    "配色": colours,
    "看板": kanban,
    "便签": scatter,
    "时间线": timeline,
    "两个节点": two_nodes,
    "三千节点": huge,
    "讲义": lecture,
}


def generate(seed: int = 7, only: list[str] | None = None) -> dict[str, Data]:
    """Name -> canvas data; the same seed gives the same canvases."""
    out = {}
    for k, (name, make) in enumerate(CORPUS.items()):
        if only and name not in only:
            continue
        rng = random.Random(seed * 1000 + k)
        out[name] = make(rng, _Ids(rng))
    return out


def obsidian_text(data: Data) -> str:
    """The text Obsidian writes: tab indent, one object per line, no final newline."""

    def one(obj: dict[str, Any]) -> str:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

    parts = []
    for key in ("nodes", "edges"):
        items = data.get(key, [])
        body = ",\n".join("\t\t" + one(o) for o in items)
        parts.append(f'\t"{key}":[\n{body}\n\t]' if items else f'\t"{key}":[]')
    return "{\n" + ",\n".join(parts) + "\n}"


def write_corpus(folder: Path, seed: int = 7, only: list[str] | None = None) -> list[Path]:
    """Write the corpus as a vault (with `.obsidian/`) into `folder`; the canvas paths."""
    (folder / ".obsidian").mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in generate(seed, only).items():
        path = folder / f"{name}.canvas"
        path.write_text(obsidian_text(data), "utf-8")
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--only", default="", help="comma-separated canvas names")
    a = ap.parse_args()
    only = [s for s in a.only.split(",") if s] or None
    unknown = [s for s in only or [] if s not in CORPUS]
    if unknown:
        print(f"unknown canvas {unknown[0]!r}; known: {', '.join(CORPUS)}", file=sys.stderr)
        raise SystemExit(2)
    for path in write_corpus(a.out, a.seed, only):
        data = json.loads(path.read_text("utf-8"))
        yellow = sum(1 for n in data["nodes"] if n.get("color") == YELLOW)
        print(f"{path}: {len(data['nodes'])} nodes, {len(data['edges'])} edges, {yellow} yellow")


if __name__ == "__main__":
    main()

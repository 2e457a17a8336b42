"""Names we give things: stable node/edge ids, and note file names safe on every OS.

Ids: `<namespace>-<16 hex>` from sha256(namespace, target id, agent), so a rerun finds the
node and edge it made before (an `attempt` > 1 hashes in the attempt: the next id when a
learner's node already has ours). Note names: `<agent>-<slug of the question>-<8 hex>.md`,
the 8 hex from the same hash. A name component keeps letters and digits of any script, `_`
and `-`, and nothing else: no separators, no `..`, no control characters or NUL, no emoji,
no leading/trailing dots or spaces, never a Windows device name (CON, NUL, COM1, ...), and
at most `MAX_NAME_BYTES` of UTF-8. The notes folder keeps the canvas's name as written
(`folder_component`: spaces and dots stay; separators, controls and Windows' reserved
characters do not).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

DEFAULT_NAMESPACE = "fanout"
#: bytes of UTF-8 in a whole note file name (most file systems allow 255)
MAX_NAME_BYTES = 120
#: characters of node text that go into a note's name
SLUG_CHARS = 24
_AGENT_BYTES = 60

_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{dev}{n}" for dev in ("com", "lpt") for n in [*"123456789", "¹", "²", "³"]}
)
_NOT_NAME = re.compile(r"[^\w-]+")
_DASHES = re.compile(r"-{2,}")
_MARKUP = re.compile(r"[#>*_`~\[\]()!|]+")


def _digest(namespace: str, target_id: str, agent: str, attempt: int = 1) -> str:
    parts = (namespace, target_id, agent) + ((str(attempt),) if attempt > 1 else ())
    key = "\x1f".join(parts)
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def namespace_slug(namespace: str) -> str:
    return safe_component(namespace, max_bytes=24, fallback=DEFAULT_NAMESPACE).lower()


def node_id_for(
    target_id: str, agent: str, namespace: str = DEFAULT_NAMESPACE, *, attempt: int = 1
) -> str:
    """The id of the file node holding `agent`'s note for `target_id`.

    `attempt` > 1 gives the next id to use when a node of the learner's already has this
    one (as stable as the first: a rerun finds the same one again)."""
    return f"{namespace_slug(namespace)}-{_digest(namespace, target_id, agent, attempt)[:16]}"


def edge_id_for(
    target_id: str, agent: str, namespace: str = DEFAULT_NAMESPACE, *, attempt: int = 1
) -> str:
    """The id of the edge from `target_id` to that node."""
    return f"{namespace_slug(namespace)}-e{_digest(namespace, target_id, agent, attempt)[16:31]}"


def short_id_for(target_id: str, agent: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The 8 hex digits that end the note's file name."""
    return _digest(namespace, target_id, agent)[:8]


def is_our_id(node_id: str | None, namespace: str = DEFAULT_NAMESPACE) -> bool:
    """True for ids `node_id_for`/`edge_id_for` make in this namespace."""
    if not node_id:
        return False
    prefix = namespace_slug(namespace) + "-"
    rest = node_id[len(prefix) :] if node_id.startswith(prefix) else ""
    return re.fullmatch(r"[0-9a-f]{16}|e[0-9a-f]{15}", rest) is not None


def _cut_bytes(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def safe_component(text: str, *, max_bytes: int = MAX_NAME_BYTES, fallback: str = "note") -> str:
    """One path component from arbitrary text; never empty, never special, never a path."""
    value = unicodedata.normalize("NFC", text)
    value = _NOT_NAME.sub("-", value)
    value = _DASHES.sub("-", value).strip("-_ ")
    value = _cut_bytes(value, max_bytes).strip("-_ ")
    if not value:
        value = fallback
    if value.split(".")[0].casefold() in _WINDOWS_RESERVED:
        value = f"_{value}"
    return value


#: characters no file system or sync tool takes in a name (Windows' set, plus controls)
_NOT_IN_NAME = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]+')


def folder_component(text: str, *, max_bytes: int = 80, fallback: str = "canvas") -> str:
    """A folder name that keeps `text` as the learner wrote it (spaces, dots, any script),
    only without what is unsafe: separators, controls, Windows' reserved characters and
    names, leading or trailing dots and spaces."""
    value = unicodedata.normalize("NFC", text)
    value = _NOT_IN_NAME.sub("-", value)
    value = _cut_bytes(value, max_bytes).strip(". ")
    if not value or value.strip(".-_ ") == "":
        value = fallback
    if value.split(".")[0].strip().casefold() in _WINDOWS_RESERVED:
        value = f"_{value}"
    return value


def slug(text: str, chars: int = SLUG_CHARS) -> str:
    """A short name from node text: its first line with words, without Markdown; maybe empty."""
    for line in text.splitlines():
        words = _MARKUP.sub(" ", line).strip()
        if words:
            cleaned = safe_component(words, fallback="")
            return cleaned[:chars].strip("-_")
    return ""


def note_file_name(agent: str, text: str, short_id: str, *, attempt: int = 1) -> str:
    """`<agent>-<slug>-<short id>.md` (`-<attempt>` before `.md` after a collision)."""
    agent_part = safe_component(agent, max_bytes=_AGENT_BYTES, fallback="agent")
    suffix = f"-{short_id}" + (f"-{attempt}" if attempt > 1 else "")
    room = MAX_NAME_BYTES - len(".md") - len(agent_part.encode()) - len(suffix) - 1
    text_part = _cut_bytes(slug(text), room).strip("-_")
    stem = f"{agent_part}-{text_part}" if text_part else agent_part
    return f"{stem}{suffix}.md"

"""`DIR/review.html`: the cleaner's verdicts as a page a person can check in a minute per class.

One file, thumbnails embedded (small base64 JPEGs), so it can be mailed or opened from anywhere.
Per class: the most typical images first (what the class looks like to the backbone), then every
flagged file with its reason and score. Each flagged file has a keep/reject choice; the page
writes those choices as lines for `DIR/decisions.txt`, which `ewaste data clean DIR --apply` reads.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

from ewaste_vision.data.images import load_rgb
from ewaste_vision.errors import UnreadableImageError
from ewaste_vision.io.atomic import write_text

if TYPE_CHECKING:
    from ewaste_vision.collect.clean import CleanReport, FileVerdict

THUMBNAIL_SIDE = 128
TYPICAL_SHOWN = 6

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{width:150px;border:1px solid #ccc;border-radius:6px;padding:6px;font-size:12px;background:#fafafa}
.card img{width:138px;height:138px;object-fit:contain;background:#eee;display:block}
.reason{font-weight:bold;color:#b00}.typical .reason{color:#070}
.missing{width:138px;height:138px;background:#ddd;display:flex;align-items:center;justify-content:center}
textarea{width:100%;height:10em;font-family:monospace}
"""

_SCRIPT = """
function update(){
  const lines=[];
  document.querySelectorAll('select[data-file]').forEach(s=>{
    if(s.value!=='auto'){lines.push(s.value+' '+s.dataset.file);}
  });
  document.getElementById('decisions').value=lines.join('\\n');
}
"""


def write_review(report: CleanReport, path: Path) -> Path:
    """Write the review page of `report` to `path` (atomically)."""
    root = report.root
    counts = report.counts()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Review: "
        + html.escape(str(root))
        + f"</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>",
        f"<h1>Review of {html.escape(str(root))}</h1>",
        f"<p>{len(report.files)} files, {counts['']} accepted, {len(report.files) - counts['']} flagged. "
        "Flagged files are moved to <code>_rejected/REASON/</code> and the others to <code>_accepted/</code> "
        f"by <code>ewaste data clean {html.escape(str(root))} --apply</code>; nothing is deleted.</p>",
    ]
    for name, info in report.classes.items():
        verdicts = [v for v in report.files if v.class_name == name]
        flagged = sorted((v for v in verdicts if not v.accepted), key=lambda v: (v.reason, -(v.score or 0.0)))
        scored = [v for v in verdicts if v.accepted and v.similarity is not None]
        typical = sorted(scored, key=lambda v: -(v.similarity or 0.0))[:TYPICAL_SHOWN]
        off_topic = info.get("off_topic")
        threshold = (
            f"off-topic threshold: local similarity {off_topic['threshold']:.3f} "
            f"(median {off_topic['median_similarity']:.3f})"
            if isinstance(off_topic, dict)
            else f"off-topic not scored: {html.escape(str(off_topic))}"
        )
        parts.append(
            f"<h2>{html.escape(name)}: {len(verdicts)} files, {len(flagged)} flagged</h2><p>{threshold}</p>"
        )
        if typical:
            parts.append("<h3>Most typical</h3><div class='grid typical'>")
            parts += [_card(root, v, choice=False) for v in typical]
            parts.append("</div>")
        parts.append("<h3>Flagged</h3><div class='grid'>")
        parts += [_card(root, v, choice=True) for v in flagged] or ["<p>none</p>"]
        parts.append("</div>")
    parts.append(
        "<h2>Decisions</h2><p>Choices made above, as lines for "
        f"<code>{html.escape(str(root / 'decisions.txt'))}</code> (add "
        "<code>reject CLASS/FILE</code> lines for anything else to drop):</p>"
        "<textarea id='decisions' readonly></textarea></body></html>"
    )
    return write_text(path, "\n".join(parts))


def _card(root: Path, verdict: FileVerdict, choice: bool) -> str:
    image = _thumbnail(root / verdict.file)
    picture = f"<img src='{image}' alt=''>" if image else "<div class='missing'>not an image</div>"
    score = f"<br>z {verdict.score:.1f}, sim {verdict.similarity:.3f}" if verdict.score is not None else ""
    # Only web links become links: a javascript: URL in a hand-edited manifest must not run on a click.
    linkable = verdict.source_url.lower().startswith(("http://", "https://"))
    source = f"<br><a href='{html.escape(verdict.source_url)}'>source</a>" if linkable else ""
    select = ""
    if choice:
        file = html.escape(verdict.file, quote=True)
        select = (
            f"<br><select data-file='{file}' onchange='update()'>"
            "<option value='auto'>reject (flagged)</option><option value='keep'>keep</option></select>"
        )
    reason = verdict.reason or "typical"
    return (
        f"<div class='card'>{picture}<span class='reason'>{html.escape(reason)}</span><br>"
        f"{html.escape(verdict.file)}<br><small>{html.escape(verdict.detail)}</small>{score}{source}{select}</div>"
    )


def _thumbnail(path: Path) -> str:
    """A data: URI of a small JPEG of `path`, or "" when it cannot be read."""
    try:
        image = load_rgb(path)
    except UnreadableImageError:
        return ""
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

"""The small HTML page at `/`: the user's jobs with status, loss curve, outputs and reel. Server-rendered, no JS
except the key form (which stores the key in a SameSite=Strict cookie so links and downloads work) and the Resume
button of FAILED / CANCELLED jobs (a POST, which takes the key as a header: the button sends the stored key)."""

from __future__ import annotations

import datetime as dt
import html

STYLE = """
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:6px 8px;text-align:left;vertical-align:middle}
th{background:#f4f4f4}
.s-COMPLETED{color:#11772d}.s-FAILED{color:#b00020}.s-CANCELLED{color:#777}.s-IN_PROGRESS{color:#0550ae}
.s-IN_QUEUE{color:#8a6d00}
code{font-size:12px}
button.resume{font-size:12px;margin-top:4px}
svg{background:#fafafa;border:1px solid #eee}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def login_page() -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>ltxtrain</title><style>{STYLE}</style></head>
<body><h1>ltxtrain</h1><p>Enter your API key to see your trainings.</p>
<form onsubmit="document.cookie='ltxtrain_key='+encodeURIComponent(this.key.value)+';path=/;SameSite=Strict';location.reload();return false">
<input name="key" type="password" size="40" autofocus> <button>Show my jobs</button></form></body></html>"""


def loss_svg(rows: list[dict], width: int = 160, height: int = 40) -> str:
    points = [(r["step"], r["loss"]) for r in rows if isinstance(r.get("step"), (int, float))
              and isinstance(r.get("loss"), (int, float))]
    if len(points) < 2:
        return ""
    s0, s1 = points[0][0], points[-1][0]
    lo, hi = min(p[1] for p in points), max(p[1] for p in points)
    span_s, span_l = (s1 - s0) or 1, (hi - lo) or 1
    xy = " ".join(f"{2 + (s - s0) / span_s * (width - 4):.1f},{2 + (hi - l) / span_l * (height - 4):.1f}"
                  for s, l in points)
    title = f"loss {points[0][1]:.3f} → {points[-1][1]:.3f} (step {s0}–{s1})"
    return (f'<svg class="loss" width="{width}" height="{height}" role="img" aria-label="{_e(title)}">'
            f'<title>{_e(title)}</title><polyline fill="none" stroke="#0550ae" stroke-width="1.5" points="{xy}"/>'
            f"</svg>")


RESUME_JS = """function ltxResume(b){var m=document.cookie.match(/(?:^|; )ltxtrain_key=([^;]*)/);b.disabled=true;
fetch(b.dataset.url,{method:'POST',headers:{'Authorization':'Key '+decodeURIComponent(m?m[1]:'')}})
.then(function(r){if(r.ok){location.reload();return}return r.json().then(function(j){
alert((j.detail&&j.detail[0]&&j.detail[0].msg)||('HTTP '+r.status));b.disabled=false})})
.catch(function(e){alert(e);b.disabled=false})}"""


def jobs_page(user: str, jobs: list[dict]) -> str:
    """`jobs`: dicts with request_id, endpoint, status, created, detail (text), outputs [(name, url)], video (url),
    metrics (rows), resumed (count, optional), resume_url (optional: a Resume button)."""
    rows = []
    for j in jobs:
        created = dt.datetime.fromtimestamp(j["created"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        links = " ".join(f'<a href="{_e(url)}">{_e(name)}</a>' for name, url in j["outputs"])
        reel = f'<video src="{_e(j["video"])}" width="200" controls muted></video>' if j.get("video") else ""
        resumed = f'<br><small>resumed {int(j["resumed"])}×</small>' if j.get("resumed") else ""
        resume = (f'<br><button class="resume" data-url="{_e(j["resume_url"])}" onclick="ltxResume(this)">Resume'
                  f'</button>' if j.get("resume_url") else "")
        rows.append(
            f'<tr class="job" data-request-id="{_e(j["request_id"])}"><td><code>{_e(j["request_id"])}</code></td>'
            f'<td>{_e(j["endpoint"])}</td><td class="s-{_e(j["status"])}">{_e(j["status"])}'
            f'<br><small>{_e(j.get("detail", ""))}</small>{resumed}{resume}</td><td>{_e(created)}</td>'
            f'<td>{loss_svg(j.get("metrics", []))}</td><td>{links}</td><td>{reel}</td></tr>')
    body = "\n".join(rows) or '<tr><td colspan="7">No trainings yet.</td></tr>'
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>ltxtrain — {_e(user)}</title>
<style>{STYLE}</style><script>{RESUME_JS}</script></head>
<body><h1>ltxtrain</h1><p>Trainings of <b>{_e(user)}</b>, newest first.</p>
<table><thead><tr><th>request</th><th>endpoint</th><th>status</th><th>created</th><th>loss</th><th>outputs</th>
<th>reel</th></tr></thead><tbody>
{body}
</tbody></table></body></html>"""

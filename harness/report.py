"""The conformance report: one JSON document (a contract, see schemas/report.schema.json)
and the HTML fragments that the pytest-html report shows at its top and per check.

Knows nothing of pytest: the plugin hands it plain dictionaries.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import jsonschema

from . import __version__
from .http import Exchange
from .metadata import schema
from .run import FAILED, READY, UPLOADING, ImageRun, Step

REPORT_VERSION = 1
EXCERPT_CHARS = 2048
VERDICTS = ("conformant", "nonconformant", "error")  # worst last


def exchange_evidence(exchange: Exchange) -> dict[str, Any]:
    """A size-bounded record of one HTTP exchange."""
    body = exchange.body[:EXCERPT_CHARS].decode("utf-8", errors="replace")
    return {
        "method": exchange.method,
        "path": exchange.path,
        "requestBodyExcerpt": exchange.request_body[:EXCERPT_CHARS].decode("utf-8", errors="replace"),
        "status": exchange.status,
        "headers": dict(exchange.headers),
        "bodyExcerpt": body,
        "bodyBytes": len(exchange.body),
        "bodyTruncated": exchange.body_truncated or len(exchange.body) > EXCERPT_CHARS,
        "error": exchange.error,
        "durationSeconds": round(exchange.seconds, 4),
    }


def run_snapshot(run: ImageRun) -> dict[str, Any]:
    """What one image's run observed so far, as plain JSON-ready data."""
    steps = [step.as_dict() for step in run.load_steps]
    upload = next((s for s in run.load_steps if s.name == UPLOADING), None)
    load_steps = [s for s in run.load_steps if s.name != UPLOADING]
    final = load_steps[-1] if load_steps else None
    container_image: dict[str, Any] = {
        "uploadStatus": next(
            (s.name for s in reversed(run.load_steps) if s.name not in (READY, FAILED)), UPLOADING
        ),
        "loadStatus": _load_status(final, failed=bool(problems_of(run))),
        "uploadPercentage": int(upload.details.get("uploadPercentage", 0)) if upload else 0,
        "loadPercentage": final.percentage if final else 0,
        "containerImageSize": run.image.size if run.image else _tar_size(run),
    }
    problems = problems_of(run)
    if problems:
        container_image["technicalInformation"] = "; ".join(problems)
    image = run.image
    reference = run.target.reference
    source = image.source if image else ("tar" if run.target.kind == "tar" else "tag")
    if reference is not None and (reference.explicit_registry or source == "registry"):
        container_image.update(reference.report_fields())
    return {
        "label": run.label or run.target.label,
        "containerImage": container_image,
        "loadSteps": steps,
        "runSteps": list(run.jobs),
        "image": {
            "reference": run.target.ref,
            "source": source,
            "id": image.image_id if image else None,
            "digest": image.digest if image else None,
            "sizeBytes": image.size if image else None,
            "modelYaml": run.metadata.source if run.metadata else None,
            "modelYamlNote": run.metadata_note,
            "harnessVersion": __version__,
            "engineVersion": run.engine_version,
        },
    }


def problems_of(run: ImageRun) -> list[str]:
    found = [str(s.details[key]) for s in run.load_steps for key in ("error", "reason") if key in s.details]
    if run.setup_error is not None and str(run.setup_error) not in found:
        found.append(str(run.setup_error))
    return found


def _load_status(final: Step | None, *, failed: bool) -> str:
    """Ready, Failed, or (while a run is still going) the step reached."""
    if final is not None and final.name in (READY, FAILED):
        return final.name
    if failed:
        return FAILED
    return final.name if final else "Not started"


def _tar_size(run: ImageRun) -> int:
    if run.target.kind == "tar" and run.target.manifest is not None:
        return run.target.manifest.path.stat().st_size
    return 0


def verdict_of(checks: list[dict[str, Any]]) -> str:
    outcomes = {check["outcome"] for check in checks}
    if "error" in outcomes or not checks:
        return "error"
    return "nonconformant" if "failed" in outcomes else "conformant"


def build(snapshots: dict[str, dict[str, Any]], checks: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole report: one entry per image, mirrored at the top level when there is one."""
    per_image = []
    for label, snapshot in snapshots.items():
        own = [
            {k: v for k, v in c.items() if k not in ("image", "evidence", "logTail")}
            for c in checks
            if c["image"] == label
        ]
        entry = {
            "verdict": verdict_of(own),
            **{k: v for k, v in snapshot.items() if k != "label"},
            "checks": own,
        }
        entry["image"]["label"] = label
        per_image.append(entry)
    verdict = max((entry["verdict"] for entry in per_image), key=VERDICTS.index, default="error")
    report: dict[str, Any] = {
        "reportVersion": REPORT_VERSION,
        "generatedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "verdict": verdict,
        "images": per_image,
    }
    if len(per_image) == 1:
        report.update({k: v for k, v in per_image[0].items() if k != "verdict"})
    return report


def validate(report: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema("report.schema.json"))
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(report)
    ]


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


# -- HTML fragments for pytest-html ---------------------------------------------------------

_COLOURS = {"conformant": "#1a7f37", "nonconformant": "#cf222e", "error": "#9a6700"}


def summary_html(report: dict[str, Any]) -> str:
    verdict = report["verdict"]
    parts = [
        f'<div class="psc-verdict psc-{verdict}" style="border-left:8px solid {_COLOURS[verdict]}">'
        f'<span>Verdict</span> <strong id="psc-verdict">{escape(verdict.upper())}</strong></div>'
    ]
    for entry in report["images"]:
        parts.append(_image_html(entry))
    return "\n".join(parts)


def _image_html(entry: dict[str, Any]) -> str:
    image = entry["image"]
    rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>"
        for k, v in entry["containerImage"].items()
    )
    failed = [c for c in entry["checks"] if c["outcome"] in ("failed", "error")]
    failed_html = (
        "<ol class='psc-failed'>"
        + "".join(
            f"<li><code>{escape(c['id'])}</code> ({escape(c['outcome'])}, "
            f"SPEC.md {escape(c['specSection'])}): "
            f"<pre>{escape(c['message'])}</pre></li>"
            for c in failed
        )
        + "</ol>"
        if failed
        else "<p class='psc-none-failed'>No check failed.</p>"
    )
    colour = _COLOURS[entry["verdict"]]
    return (
        f'<section class="psc-image" data-verdict="{entry["verdict"]}">'
        f'<h3>{escape(image["label"])} <span style="color:{colour}">{escape(entry["verdict"])}</span></h3>'
        f"<p>{escape(image['source'])} <code>{escape(str(image['reference']))}</code>, "
        f"id <code>{escape(str(image['id'] or '-'))[:19]}</code>; {escape(image['modelYamlNote'] or '')}</p>"
        f"<h4>Failed checks</h4>{failed_html}"
        f"<h4>Load steps</h4>{timeline_svg(entry['loadSteps'])}"
        f"<h4>Container image</h4><table class='psc-container-image'>{rows}</table>"
        "</section>"
    )


def timeline_svg(steps: list[dict[str, Any]], width: int = 720) -> str:
    """One bar per load step, placed on a common time axis."""
    if not steps:
        return "<p>No load step was reached.</p>"
    starts = [datetime.fromisoformat(s["startedAt"]).timestamp() for s in steps]
    origin = min(starts)
    total = max(max(t - origin + s["durationSeconds"] for t, s in zip(starts, steps, strict=True)), 0.001)
    label_width, row = 230, 24
    scale = (width - label_width - 90) / total
    bars = []
    for i, (start, step) in enumerate(zip(starts, steps, strict=True)):
        y = i * row + 4
        x = label_width + (start - origin) * scale
        w = max(step["durationSeconds"] * scale, 2)
        failed = step["stepName"] == FAILED or "error" in step.get("details", {})
        colour = "#cf222e" if failed else "#1a7f37" if step["stepName"] == READY else "#0969da"
        name = f"{step['step']} {step['stepName']} {step['percentage']}%"
        bars.append(
            f'<g class="psc-step"><text x="0" y="{y + 14}" font-size="12">{escape(name)}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="16" fill="{colour}" rx="2">'
            f"<title>{escape(json.dumps(step.get('details', {})))}</title></rect>"
            f'<text x="{x + w + 4:.1f}" y="{y + 13}" font-size="11">'
            f"{step['durationSeconds']:.3f} s</text></g>"
        )
    height = len(steps) * row + 8
    return (
        f'<svg class="psc-timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="load steps timeline">{"".join(bars)}</svg>'
    )


def evidence_html(check: dict[str, Any]) -> str:
    """Request and response evidence of one check, and the log tail when it failed."""
    parts = [f"<div class='psc-evidence'><p>SPEC.md {escape(check['specSection'])}</p>"]
    for ex in check.get("evidence", []):
        answer = f"{ex['status']}" if ex["status"] is not None else f"no answer ({ex['error']})"
        headers = "".join(f"{escape(k)}: {escape(str(v))}\n" for k, v in ex["headers"].items())
        truncated = " [truncated]" if ex["bodyTruncated"] else ""
        parts.append(
            f"<pre>{escape(ex['method'])} {escape(ex['path'])} {escape(ex['requestBodyExcerpt'])}\n"
            f"→ {escape(answer)} in {ex['durationSeconds']:.3f} s\n{headers}\n"
            f"{escape(ex['bodyExcerpt'])}{truncated}</pre>"
        )
    if check.get("logTail"):
        parts.append(f"<p>Container log (tail)</p><pre>{escape(check['logTail'])}</pre>")
    parts.append("</div>")
    return "".join(parts)

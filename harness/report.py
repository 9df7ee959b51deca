"""The conformance report: one JSON document (a contract, see schemas/report.schema.json)
and the HTML fragments that the pytest-html report shows at its top and per check.

Built from plain data alone: the observation snapshots of the images and one record per
check. Knows nothing of pytest.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema

from . import verdicts
from .errors import rule_link
from .http import Exchange
from .metadata import schema
from .platform import FAILED, NOT_STARTED, READY
from .rehearsal import NEAR_MEMORY
from .runtime import SourceKind
from .transport import Answer
from .verdicts import CheckOutcome, Verdict

REPORT_VERSION = 2
EXCERPT_CHARS = 2048


def exchange_evidence(exchange: Answer) -> dict[str, Any]:
    """A size-bounded record of one exchange (another transport's writes its own, in the same fields)."""
    if not isinstance(exchange, Exchange):
        record: dict[str, Any] = exchange.evidence_record(EXCERPT_CHARS)  # type: ignore[attr-defined]
        return record
    return {
        "method": exchange.method,
        "path": exchange.path,
        "requestBodyExcerpt": exchange.request_body[:EXCERPT_CHARS].decode("utf-8", errors="replace"),
        "status": exchange.status,
        "outcome": exchange.outcome.value,
        "headers": {k: v[:EXCERPT_CHARS] for k, v in list(exchange.headers.items())[:50]},
        "bodyExcerpt": exchange.body[:EXCERPT_CHARS].decode("utf-8", errors="replace"),
        "bodyBytes": len(exchange.body),
        "bodyTruncated": exchange.body_truncated or len(exchange.body) > EXCERPT_CHARS,
        "error": None if exchange.answered else exchange.detail,
        "durationSeconds": round(exchange.seconds, 4),
    }


def check_record(
    check_id: str, label: str, outcome: str, message: str, rule: str, seconds: float = 0.0, **extra: Any
) -> dict[str, Any]:
    return {
        "id": check_id,
        "image": label,
        "outcome": CheckOutcome(outcome).value,  # plain data: records travel from xdist workers
        "message": message,
        "rule": rule_link(rule),
        "durationSeconds": round(seconds, 4),
        **extra,
    }


def verdict_of(checks: list[dict[str, Any]]) -> Verdict:
    return verdicts.verdict_of(check["outcome"] for check in checks)


def build(
    snapshots: dict[str, dict[str, Any]], checks: list[dict[str, Any]], interrupted: str | None = None
) -> dict[str, Any]:
    """The whole report: one entry per image, mirrored at the top level when there is one."""
    per_image = []
    for label, snapshot in snapshots.items():
        own = [
            {k: v for k, v in c.items() if k not in ("image", "evidence", "logTail")}
            for c in checks
            if c["image"] == label
        ]
        entry = {
            "verdict": verdict_of(own).value,
            **{k: v for k, v in snapshot.items() if k != "label"},
            "checks": own,
        }
        entry["image"]["label"] = label
        per_image.append(entry)
    verdict = verdicts.worst(entry["verdict"] for entry in per_image).value
    report: dict[str, Any] = {
        "reportVersion": REPORT_VERSION,
        "generatedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "verdict": verdict,
        "interrupted": interrupted,
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

_COLOURS = {
    Verdict.CONFORMANT: "#1a7f37",
    Verdict.INCOMPLETE: "#bc4c00",
    Verdict.NONCONFORMANT: "#cf222e",
    Verdict.ERROR: "#9a6700",
}


def summary_html(report: dict[str, Any]) -> str:
    verdict = report["verdict"]
    parts = [
        f'<div class="psc-verdict psc-{verdict}" style="border-left:8px solid {_COLOURS[verdict]}">'
        f'<span>Verdict</span> <strong id="psc-verdict" style="color:{_COLOURS[verdict]}">'
        f"{escape(verdict.upper())}</strong></div>"
    ]
    if report.get("interrupted"):
        parts.append(f"<p class='psc-interrupted'>{escape(report['interrupted'])}</p>")
    for entry in report["images"]:
        parts.append(_image_html(entry))
    return "\n".join(parts)


def _image_html(entry: dict[str, Any]) -> str:
    image = entry["image"]
    rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(_field(k, v))}</td>"
        f"<td class='psc-meaning'>{_meaning(k, entry)}</td></tr>"
        for k, v in entry["containerImage"].items()
    )
    failed = [c for c in entry["checks"] if c["outcome"] in (CheckOutcome.FAILED, CheckOutcome.ERROR)]
    not_run = [c for c in entry["checks"] if c["outcome"] == CheckOutcome.NOT_RUN]
    failed_html = (
        "<ol class='psc-failed'>"
        + "".join(
            f"<li><code>{escape(c['id'])}</code> ({escape(c['outcome'])}, "
            f"{_rule_html(c['rule'])}): "
            f"<pre>{escape(c['message'])}</pre>{_saved_outputs_html(c)}</li>"
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
        + (
            "<h4>Checks that did not run</h4><ul class='psc-not-run'>"
            + "".join(f"<li><code>{escape(c['id'])}</code>: {escape(c['message'])}</li>" for c in not_run)
            + "</ul>"
            if not_run
            else ""
        )
        + f"<h4>Load steps</h4>{timeline_svg(entry['loadSteps'])}"
        f"<p class='psc-caption psc-load-caption'>{_load_caption(entry)}</p>"
        f"{rehearsal_html(entry.get('rehearsal'), entry.get('warnings') or [])}"
        f"<h4>Container image</h4><table class='psc-container-image'>{rows}</table>"
        f"<p class='psc-caption psc-container-caption'>{CONTAINER_IMAGE_CAPTION}</p>"
        "</section>"
    )


# What the platform's words mean, said where an author reads them (docs/contract.md#load-steps).
CONTAINER_IMAGE_CAPTION = (
    "This is the container image object the platform shows for your image while it takes it in, "
    "with the platform's own field names and values (<code>docs/contract.md#load-steps</code>, "
    "or <code>python -m harness contract load-steps</code>)."
)
_UPLOADED = {
    SourceKind.TAG: "100: the image was already in the Docker engine (given by its tag), so nothing was "
    "uploaded; on the platform, this is the upload of your image",
    SourceKind.TAR: "100: the whole TAR archive was loaded into the Docker engine, "
    "as the platform uploads it",
    SourceKind.REGISTRY: "100: the image was pulled from its registry into the Docker engine",
}


def _meaning(name: str, entry: dict[str, Any]) -> str:
    """One field of the container image object, in an author's words, for this run."""
    fields = entry["containerImage"]
    status = fields.get("loadStatus")
    if name == "uploadStatus":
        if status in (READY, FAILED):
            return (
                f"the last load step the image went through before the load ended <code>{escape(status)}"
                "</code> (see the load steps above); it stays on that step once the load is over: "
                "nothing is still under way"
            )
        return "the load step under way when the run stopped"
    if name == "loadStatus":
        return {
            READY: "how the load ended: the model answered <code>GET /status</code> with 200 "
            "(gRPC: <code>Status</code>, <code>status_code</code> 200) within the status timeout",
            FAILED: "how the load ended: it failed, <code>technicalInformation</code> says why",
            NOT_STARTED: "no container was started",
        }.get(status, "the run stopped during this load step")
    if name == "uploadPercentage":
        if fields.get("uploadPercentage") != 100:
            return "how much of the image reached the Docker engine: it did not get there whole"
        return "how much of the image reached the Docker engine: " + _UPLOADED.get(
            entry["image"]["source"], "all of it"
        )
    if name == "loadPercentage":
        return (
            "how far the load got, not a score: 0 at the upload, 33 once the container is started, "
            "66 while <code>GET /status</code> (gRPC: <code>Status</code>) is checked, 100 only when "
            "ready; a failed load keeps the percentage of the step it failed in"
        )
    if name == "containerImageSize":
        return "the image's size in the Docker engine"
    if name == "technicalInformation":
        return "what went wrong, present only when something failed"
    if name in ("registryHost", "repositoryNamespace", "repositoryName", "imagePrefix"):
        return "where the image is stored in its registry"
    return ""


def _load_caption(entry: dict[str, Any]) -> str:
    """What the steps and their percentages mean, and what step 1 was for this image."""
    text = (
        "The platform takes an image in through these steps, each named with the percentage "
        "of the load reached when it begins: 1 <code>Uploading container image</code> 0%, "
        "2 <code>Loading model '&lt;name&gt;'</code> 33% (the container is created and started), "
        "3 <code>Checking status endpoint</code> 66% (<code>GET /status</code>, or gRPC "
        "<code>Status</code>, until it answers 200), "
        "then 4 <code>Ready</code> 100%, or 4 <code>Failed</code> at the percentage the load had "
        "reached. A percentage is how far the load got, not a score. The time after each bar is "
        "how long the step took here."
    )
    source = entry["image"]["source"]
    if any(step["step"] == 1 for step in entry["loadSteps"]):
        text += " " + {
            SourceKind.TAG: "This image was already in the Docker engine (given by its tag): step 1 had "
            "nothing to upload and took no time; on the platform it is the upload of your image.",
            SourceKind.TAR: "Step 1 here loaded the TAR archive into the Docker engine.",
            SourceKind.REGISTRY: "Step 1 here pulled the image from its registry into the Docker engine.",
        }.get(source, "")
    steps = entry["loadSteps"]
    if len(steps) >= 2 and steps[-1]["stepName"] == FAILED:
        during = steps[-2]
        text += (
            f" This load failed at {steps[-1]['percentage']}%, during step {during['step']} "
            f"<code>{escape(during['stepName'])}</code>: <code>technicalInformation</code> below says why."
        )
    return text


def _field(name: str, value: Any) -> str:
    if name == "containerImageSize" and isinstance(value, int):
        return f"{value / 2**20:.1f} MiB ({value} bytes)"
    return str(value)


def timeline_svg(steps: list[dict[str, Any]], width: int = 720) -> str:
    """One bar per load step, placed on a common time axis."""
    if not steps:
        return "<p>No load step was reached.</p>"
    starts = [datetime.fromisoformat(s["startedAt"]).timestamp() for s in steps]
    origin = min(starts)
    total = max(max(t - origin + s["durationSeconds"] for t, s in zip(starts, steps, strict=True)), 0.001)
    names = [_step_label(step) for step in steps]
    # Labels in a column of their own, as wide as the longest (about 7 px a character at 12 px).
    label_width, row = max(len(name) for name in names) * 7 + 12, 24
    width = max(width, label_width + 300)
    scale = (width - label_width - 90) / total
    bars = []
    for i, (start, step) in enumerate(zip(starts, steps, strict=True)):
        y = i * row + 4
        x = label_width + (start - origin) * scale
        w = max(step["durationSeconds"] * scale, 2)
        failed = step["stepName"] == FAILED or "error" in step.get("details", {})
        colour = "#cf222e" if failed else "#1a7f37" if step["stepName"] == READY else "#0969da"
        name = names[i]
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


def _bar(
    label: str,
    used: float | None,
    of: float | None,
    text: str,
    margin: float | None = None,
    source: str | None = None,
) -> str:
    """One horizontal bar: what was used of what is declared or allowed; ``source``: how it was measured."""
    if used is None or not of:
        why = source if source and source.startswith("not measured") else "not measured"
        return f"<tr><th>{escape(label)}</th><td colspan='2'>{escape(why)}</td></tr>"
    if source:
        text += f" ({source})"
    share = max(0.0, min(used / of, 1.0))
    over = margin is not None and share > 1 - margin
    colour = "#cf222e" if share >= 1 else "#bc4c00" if over else "#1a7f37"
    mark = (
        f"<div class='psc-margin' style='left:{(1 - margin) * 100:.1f}%' title='margin'></div>"
        if margin is not None
        else ""
    )
    return (
        f"<tr><th>{escape(label)}</th><td><div class='psc-bar'>{mark}"
        f"<div style='width:{share * 100:.1f}%;background:{colour}'></div></div></td>"
        f"<td>{escape(text)}</td></tr>"
    )


def rehearsal_html(rehearsal: dict[str, Any] | None, warnings: list[str]) -> str:
    """The platform rehearsal: resources against model.yaml, timings against the timeouts."""
    if rehearsal is None:
        return ""
    memory, cpu = rehearsal["memory"], rehearsal["cpu"]
    status, run = rehearsal["statusTimeout"], rehearsal["runTimeout"]
    margin = rehearsal["margin"]

    def mib(value: int | None) -> str:
        return "-" if value is None else f"{value / 2**20:.0f} MiB"

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    percent = f" ({memory['percentOfDeclared']}%)" if memory["percentOfDeclared"] is not None else ""
    used_cpu = "-" if cpu["averageUsed"] is None else f"{cpu['averageUsed']:.2f}"
    rows = [
        _bar(
            "memory (peak)",
            memory["peakBytes"],
            memory["declaredBytes"],
            f"{mib(memory['peakBytes'])} of {mib(memory['declaredBytes'])} declared{percent}",
            1 - NEAR_MEMORY,
            memory.get("peakSource"),
        ),
        _bar(
            "CPU (average)",
            cpu["averageUsed"],
            cpu["declared"],
            f"{used_cpu} of {cpu['declared']:g} declared",
            source=cpu.get("averageSource"),
        ),
        _bar(
            "ready after",
            status["readySeconds"],
            status["seconds"],
            f"{seconds(status['readySeconds'])} of the {status['seconds']:g} s status timeout",
            margin,
        ),
        _bar(
            "slowest /run",
            run["slowestSeconds"],
            run["seconds"],
            f"{seconds(run['slowestSeconds'])} of the {run['seconds']:g} s run timeout",
            margin,
        ),
    ]
    listed = "".join(f"<li>{escape(w)}</li>" for w in warnings)
    return (
        "<h4>Platform rehearsal</h4><table class='psc-rehearsal'>"
        + "".join(rows)
        + "</table>"
        + (f"<ul class='psc-warnings'>{listed}</ul>" if warnings else "<p>No warning.</p>")
    )


def _step_label(step: dict[str, Any]) -> str:
    label = f"{step['step']} {step['stepName']} {step['percentage']}%"
    if step.get("details", {}).get("source") == SourceKind.TAG:
        label += " (already in the engine)"  # nothing was uploaded: said as what it was
    return label


def evidence_html(check: dict[str, Any]) -> str:
    """What the check enforces, its request and response evidence, and the log tail when it failed."""
    enforces = f"{escape(check['summary'])}: " if check.get("summary") else ""
    parts = [f"<div class='psc-evidence'><p>{enforces}{_rule_html(check['rule'])}</p>"]
    for ex in check.get("evidence", []):
        answer = f"{ex['status']}" if ex["status"] is not None else "no answer"
        if ex["error"]:
            answer += f" ({ex['error']})"
        headers = "".join(f"{escape(k)}: {escape(str(v))}\n" for k, v in ex["headers"].items())
        truncated = " [truncated]" if ex["bodyTruncated"] else ""
        parts.append(
            f"<pre>{escape(ex['method'])} {escape(ex['path'])} {escape(ex['requestBodyExcerpt'])}\n"
            f"→ {escape(answer)} in {ex['durationSeconds']:.3f} s\n{headers}\n"
            f"{escape(ex['bodyExcerpt'])}{truncated}</pre>"
        )
    parts.append(_saved_outputs_html(check))
    if check.get("logTail"):
        parts.append(f"<p>Container log (tail)</p><pre>{escape(check['logTail'])}</pre>")
    parts.append("</div>")
    return "".join(parts)


def _rule_html(link: str) -> str:
    return f"rule <code>{escape(link)}</code>"


def _saved_outputs_html(check: dict[str, Any]) -> str:
    """Links to the outputs a failed example wrote, kept beside the report."""
    if not check.get("savedOutputs"):
        return ""
    # Relative to the report directory, where conformance.html is written by default.
    links = ", ".join(f"<a href='{escape(quote(path))}'>{escape(path)}</a>" for path in check["savedOutputs"])
    return f"<p class='psc-saved-outputs'>The outputs the model wrote: {links}</p>"

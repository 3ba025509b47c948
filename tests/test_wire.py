"""The wire's one vocabulary: the doc is generated from it, and the browser code uses its names only."""

from __future__ import annotations

import re
from pathlib import Path

from callserver.calls.states import EndReason
from callserver.wire.vocabulary import (
    FALLBACK_FOR,
    CallEndWhy,
    CallProblem,
    ChatClosedReason,
    Fallback,
    RingStopped,
    TransferFailed,
    markdown,
    with_vocabulary,
)

ROOT = Path(__file__).resolve().parent.parent
WIDGET = ROOT / "web_button" / "widget.js"
SOFTPHONE = sorted((ROOT / "operator_softphone").glob("*.js"))
# DESIGN.md's end reason for a side whose connection did not come back (the softphone names it already).
END_REASONS = {str(r) for r in EndReason} | {"lost"}


def _table(source: str, opening: str) -> dict[str, str]:
    """The `key: value` pairs of the JS object literal that starts right after `opening`."""
    start = source.index(opening) + len(opening)
    body = source[start : source.index("}", start)]
    return dict(re.findall(r"(\w+)\s*:\s*('[^']*'|t\('[^']*'\))", body))


def _softphone() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in SOFTPHONE)


def test_the_doc_carries_the_generated_vocabulary() -> None:
    doc = (ROOT / "docs" / "signaling.md").read_text(encoding="utf-8")
    assert markdown() in doc
    assert with_vocabulary(doc) == doc, "run: python -m callserver.wire.vocabulary --write docs/signaling.md"


def test_the_widget_falls_back_as_the_vocabulary_says() -> None:
    table = _table(WIDGET.read_text(encoding="utf-8"), "const FALLBACKS = {")
    assert {key: value.strip("'") for key, value in table.items()} == {
        k: str(v) for k, v in FALLBACK_FOR.items()
    }
    assert set(table) <= {str(p) for p in CallProblem} | END_REASONS


def test_the_widget_names_its_problems_and_reasons_from_the_vocabulary() -> None:
    source = WIDGET.read_text(encoding="utf-8")
    # endCall(current, REASON, TEXT, PROBLEM, WHY): the reason is an end reason, the problem the
    # widget's own code for a call that failed in the browser (server codes pass through String()).
    reasons: set[str] = set()
    problems: set[str] = set()
    for args in re.findall(r"endCall\(current, (.*?)\);", source):
        reason, _, rest = args.partition(",")
        reasons |= set(re.findall(r"'(\w+)'", reason))
        problems |= set(re.findall(r"'(\w+)'", re.sub(r"\b(?:t|String)\([^()]*\)", "", rest)))
    assert problems and reasons, "the widget's endCall() calls were not found"
    assert problems <= {str(p) for p in CallProblem}, problems - {str(p) for p in CallProblem}
    assert reasons <= END_REASONS, reasons - END_REASONS
    for why in re.findall(r"frame\.why === '(\w+)'", source):
        assert why in {str(w) for w in CallEndWhy}
    fallbacks = set(re.findall(r"fallback: '(\w+)'", source))
    assert fallbacks <= {str(f) for f in Fallback}
    assert "microphone_blocked" not in source  # one name for it everywhere: microphone_denied


def test_every_why_the_shopper_can_chat_after_is_a_fallback() -> None:
    # The widget sends `why` back as the chat's fallback, unless it shows the offline form instead or
    # the call had connected (connection_lost).
    chat_after = set(CallEndWhy) - {CallEndWhy.NOBODY_ONLINE, CallEndWhy.CONNECTION_LOST}
    assert {str(w) for w in chat_after} <= {str(f) for f in Fallback}


def test_the_softphone_explains_each_fallback_and_reason_it_can_get() -> None:
    source = _softphone()
    fallbacks = _table(source, "const fallbackTexts = () => ({")
    assert set(fallbacks) == {str(f) for f in Fallback}
    reasons = set(_table(source, "function reasonText(code) {"))
    known = END_REASONS | {str(r) for r in RingStopped} | {str(r) for r in TransferFailed} | {"unknown"}
    assert reasons <= known, reasons - known
    for reason in re.findall(r"reason === '(\w+)'", source):
        assert reason in {str(r) for r in ChatClosedReason}

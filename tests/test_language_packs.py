"""The language packs: six complete languages, and no text of the softphone outside them.

The softphone once said "Answer", "Take" and "Handled" in English whatever the operator's language:
the literals were in its script, out of the packs' reach. These tests read the browser code (every
module of the softphone) the way a reviewer would, so such a literal fails here instead of reaching an
operator.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

from callserver import i18n

ROOT = Path(__file__).resolve().parents[1]
# The softphone's ES modules (main.js and what it imports), all of them.
SOFTPHONE_JS = sorted((ROOT / "operator_softphone").glob("*.js"))
SOFTPHONE_HTML = ROOT / "operator_softphone" / "index.html"
WIDGET_JS = ROOT / "web_button" / "widget.js"

# Literals that look like words but are the browser's own names, never shown.
NOT_TEXT = {"Enter", "Notification"}
# What comes just before a literal that is a class name, a selector or an attribute value.
NOT_SHOWN_BY = re.compile(
    r"(\b(class|rel|type|target|href|name|value|tag)\s*:\s*|querySelector(All)?\(\s*|classList\.\w+\(\s*"
    r"|className\s*=\s*)$"
)
# What comes just before a literal that is put on the screen (a text, a label, an alert, a title).
SHOWN_BY = re.compile(
    r"(textContent|innerText|title|placeholder|label)\s*=\s*$|'aria-label':\s*$|setAttribute\('aria-label',\s*$"
    r"|(showAlert|finishActive|chatAlert|showActive|Notification|setPressed\([^()]*,[^()]*,)\s*\(?\s*$|\},\s*$"
)
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def js_strings(source: str) -> list[tuple[int, str, str]]:
    """The string literals of a script and the fixed parts of its template literals.

    Each comes as (line, text, the code just before it); comments and regular expressions are skipped,
    so an apostrophe in a comment or a quote in a regex is not taken for a string.
    """
    found: list[tuple[int, str, str]] = []
    i, n = 0, len(source)
    previous = ""  # the last token, to tell a regex from a division
    templates: list[int] = []  # open `${` of template literals: the braces opened inside each

    def line_at(at: int) -> int:
        return source.count("\n", 0, at) + 1

    def template_part(start: int) -> int:
        """Reads a template's fixed text from `start`; returns where the code goes on."""
        j = start
        text: list[str] = []
        while j < n:
            if source[j] == "\\":
                text.append(source[j : j + 2])
                j += 2
            elif source[j] == "`":
                found.append((line_at(start), "".join(text), source[max(0, start - 60) : start - 1]))
                return j + 1
            elif source.startswith("${", j):
                found.append((line_at(start), "".join(text), source[max(0, start - 60) : start - 1]))
                templates.append(0)
                return j + 2
            else:
                text.append(source[j])
                j += 1
        raise ValueError(f"template literal from line {line_at(start)} never ends")

    while i < n:
        c = source[i]
        if c.isspace():
            i += 1
        elif source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
        elif source.startswith("/*", i):
            i = source.index("*/", i) + 2
        elif c in "'\"":
            j = i + 1
            while source[j] != c:
                j += 2 if source[j] == "\\" else 1
            found.append((line_at(i), source[i + 1 : j], source[max(0, i - 60) : i]))
            i, previous = j + 1, "string"
        elif c == "`":
            i, previous = template_part(i + 1), "string"
        elif c == "{" and templates:
            templates[-1] += 1
            i, previous = i + 1, c
        elif c == "}" and templates and templates[-1] == 0:
            templates.pop()
            i, previous = template_part(i + 1), "string"
        elif c == "}" and templates:
            templates[-1] -= 1
            i, previous = i + 1, c
        elif c == "/" and (previous == "" or previous in "(,=:[!&|?{};+-*%<>~^" or previous == "return"):
            j, in_class = i + 1, False
            while in_class or source[j] != "/":
                if source[j] == "\\":
                    j += 1
                elif source[j] == "[":
                    in_class = True
                elif source[j] == "]":
                    in_class = False
                j += 1
            i = j + 1
            while i < n and source[i].isalpha():
                i += 1
            previous = "regex"
        elif c.isalnum() or c in "_$":
            j = i
            while j < n and (source[j].isalnum() or source[j] in "_$"):
                j += 1
            previous = source[i:j]
            i = j
        else:
            i, previous = i + 1, c
    return found


def looks_like_text(text: str, before: str) -> bool:
    """Words for a person: two words, a word beside a number or a gap for one, one capitalised word,
    an ellipsis, or anything put on the screen."""
    if text.strip() in NOT_TEXT or not re.search(r"[^\W\d_]{2,}", text) or NOT_SHOWN_BY.search(before):
        return False
    if re.search(r"[^\W\d_]\s+[^\W\d_]|\s[a-z]{2,}|[a-z]{2,}\s", text) or "…" in text:
        return True
    if re.fullmatch(r"\s*[A-Z][a-z]+[.!?:]?\s*", text):
        return True
    return bool(SHOWN_BY.search(before))


def english_in(source: str) -> list[str]:
    return [
        f"line {line}: {text!r}" for line, text, before in js_strings(source) if looks_like_text(text, before)
    ]


def test_the_literal_finder_catches_what_the_softphone_once_had() -> None:
    sample = """
      // Comments aren't texts: the operator's page (it's "fine").
      const isUrl = /^https?:\\/\\//i.test(text) ? 'a' : `${scheme}//${location.host}/ws/operator`;
      const b = el('button', { type: 'button', 'data-testid': 'op-answer' }, 'Answer');
      tick.textContent = 'sent';
      const waiting = el('span', { class: 'waiting' }, `waiting ${clock(Date.now() - since)}`);
      if (event.key === 'Enter' && 'Notification' in window) activeStatus.textContent = 'Connecting…';
      const labels = { busy: c.in_call ? ', in a call' : '', n: `${x} (${y ? `${z}` : 'no'})` };
      showAlert(t('alert_offline_hold'));
      const tries = mail.attempts === 1 ? '1 attempt' : `${mail.attempts} attempts`;
      return el('a', { href: url.href, target: '_blank', rel: 'noopener noreferrer', class: 'num time' });
    """
    assert english_in(sample) == [
        "line 4: 'Answer'",
        "line 5: 'sent'",
        "line 6: 'waiting '",
        "line 7: 'Connecting…'",
        "line 8: ', in a call'",
        "line 10: '1 attempt'",
        "line 10: ' attempts'",
    ]


def test_the_softphone_modules_show_no_text_of_their_own() -> None:
    assert len(SOFTPHONE_JS) > 1, "the softphone's modules were not found"
    found = {path.name: english_in(path.read_text(encoding="utf-8")) for path in SOFTPHONE_JS}
    assert {name: texts for name, texts in found.items() if texts} == {}


class _PageTexts(HTMLParser):
    """The softphone page's visible texts and labels, and the pack keys that replace them."""

    ATTRIBUTES: ClassVar[dict[str, str]] = {
        "aria-label": "data-i18n-label",
        "placeholder": "data-i18n-placeholder",
    }

    def __init__(self) -> None:
        super().__init__()
        self.open: list[tuple[str, dict[str, str | None]]] = []
        self.keys: dict[str, str] = {}  # key → the page's English for it
        self.untranslated: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name, keyed_by in self.ATTRIBUTES.items():
            value = attributes.get(name)
            if value is None:
                continue
            key = attributes.get(keyed_by)
            if key is None:
                self.untranslated.append(f"<{tag} {name}={value!r}>")
            else:
                self.keys[key] = value
        if "title" in attributes:
            self.untranslated.append(f"<{tag} title=…>: the softphone translates no title attribute")
        if tag not in {"meta", "link", "input", "br", "img"}:
            self.open.append((tag, attributes))

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        text = data.strip()
        if not re.search(r"[^\W\d_]", text) or (self.open and self.open[-1][0] in {"script", "style"}):
            return
        tag, attributes = self.open[-1] if self.open else ("", {})
        key = attributes.get("data-i18n")
        if key is None:
            self.untranslated.append(f"<{tag}>{text}")
        else:
            self.keys[key] = text


def softphone_keys() -> tuple[set[str], _PageTexts]:
    script = "\n".join(path.read_text(encoding="utf-8") for path in SOFTPHONE_JS)
    # A key made up at run time would escape the checks below: every t( names its key (or is the
    # page's own data-i18n attributes, checked with the page).
    unnamed = re.findall(r"^.*(?<!function )\bt\((?!'[a-z_]+'[,)]|node\.dataset\.i18n\w*\)).*$", script, re.M)
    assert unnamed == []
    page = _PageTexts()
    page.feed(SOFTPHONE_HTML.read_text(encoding="utf-8"))
    return set(re.findall(r"\bt\('([a-z_]+)'", script)) | set(page.keys), page


def test_the_softphone_page_shows_only_texts_of_the_packs() -> None:
    used, page = softphone_keys()
    assert page.untranslated == []
    english = i18n.pack("en")["softphone"]
    assert sorted(used - set(english)) == [], "texts the softphone asks for that the packs lack"
    assert sorted(set(english) - used) == [], "texts of the packs that the softphone never shows"
    # Until the pack arrives the page shows its own English: the same as the English pack's.
    assert {key: english[key] for key in page.keys} == page.keys


def test_every_language_pack_has_every_text_in_its_own_words() -> None:
    english = i18n.pack("en")
    for language in i18n.LANGUAGES:
        pack = i18n.pack(language)
        for part in ("widget", "softphone", "days"):
            assert set(pack[part]) == set(english[part]), (language, part)
            for key, text in pack[part].items():
                assert isinstance(text, str) and text.strip(), (language, part, key)
                wanted = set(PLACEHOLDER.findall(english[part][key]))
                assert set(PLACEHOLDER.findall(text)) == wanted, (language, part, key, text)
            if language != "en":
                # A few words are the same in both languages ("Chat", "Status"); a copy is not a translation.
                same = sorted(key for key, text in pack[part].items() if text == english[part][key])
                assert len(same) <= len(english[part]) // 10, (language, part, same)
    # Every text the widget asks for by key is in the packs.
    asked = set(re.findall(r"\bt\('([a-z_]+)'", WIDGET_JS.read_text(encoding="utf-8")))
    assert asked and asked <= set(english["widget"]), sorted(asked - set(english["widget"]))
    assert i18n.choose("ru-RU") == "ru"
    assert i18n.choose("pt-BR") == "en"
    assert i18n.choose("ru", site_language="pl") == "pl"
    texts = i18n.widget_texts("ru", {"*": {"greeting": "Hi!"}, "ru": {"call": "Звонок"}})
    assert (texts["greeting"], texts["call"], texts["chat"]) == ("Hi!", "Звонок", "Чат")

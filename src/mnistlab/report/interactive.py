"""What makes report.html a page to work with: sortable and filterable tables, links to each
job's folder, log and config, and the Content-Security-Policy that lets only this script run.

The script is a constant: the policy names its SHA-256 (and the style sheet's), and nothing
else may run or load: no other script, no inline handler (markup.tag writes none), no fetch,
no frame, no form. A value read from a job folder reaches the page escaped, so even a crafted
`<script>` in a setting is text, and would be refused by the policy if it were not.
"""

import base64
import hashlib
import json
import os
from pathlib import Path
from urllib.parse import quote

from mnistlab.names import CONFIG_LOG_FILES
from mnistlab.report.markup import Html, join, tag, trusted

SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var body = table.tBodies[0];
  table.tHead.querySelectorAll("th").forEach(function (head, column) {
    head.title = "click to sort";
    head.addEventListener("click", function () {
      var up = head.dataset.order !== "up";
      head.dataset.order = up ? "up" : "down";
      var rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].textContent, y = b.cells[column].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var order = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
        return up ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
document.querySelectorAll("table[data-settings]").forEach(function (table) {
  var settings = JSON.parse(document.getElementById(table.dataset.settings).textContent);
  var out = document.getElementById(table.dataset.settings + "-diff");
  table.addEventListener("change", function () {
    var picked = Array.from(table.querySelectorAll("input.pick:checked")).map(function (box) {
      return box.dataset.job;
    });
    out.textContent = picked.length === 2 ? "" : "tick two jobs: the settings that differ";
    if (picked.length !== 2) return;
    var a = settings[picked[0]] || {}, b = settings[picked[1]] || {};
    var keys = Array.from(new Set(Object.keys(a).concat(Object.keys(b)))).sort();
    keys = keys.filter(function (key) { return a[key] !== b[key]; });
    if (!keys.length) { out.textContent = "the two jobs' settings are the same"; return; }
    var shown = document.createElement("table");
    [["setting"].concat(picked)].concat(keys.map(function (key) {
      return [key, key in a ? a[key] : "(absent)", key in b ? b[key] : "(absent)"];
    })).forEach(function (cells, n) {
      var row = shown.insertRow();
      cells.forEach(function (text) {
        var cell = document.createElement(n ? "td" : "th");
        cell.textContent = text;
        row.appendChild(cell);
      });
    });
    out.appendChild(shown);
  });
});
document.querySelectorAll("input.filter").forEach(function (input) {
  var table = document.getElementById(input.dataset.table);
  input.addEventListener("input", function () {
    var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean);
    Array.from(table.tBodies[0].rows).forEach(function (row) {
      var text = row.textContent.toLowerCase();
      row.hidden = !words.every(function (word) { return text.indexOf(word) >= 0; });
    });
  });
});
"""


def sha256(text: str) -> str:
    """A CSP source for `text`: 'sha256-<base64 of its SHA-256>'."""
    digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode("ascii")
    return f"'sha256-{digest}'"


def policy(style: str) -> Html:
    """The page's Content-Security-Policy, as a <meta> element: our script and style only."""
    rules = (
        "default-src 'none'",
        "img-src data:",
        f"style-src {sha256(style)}",
        f"script-src {sha256(SCRIPT)}",
        "base-uri 'none'",
        "form-action 'none'",
    )
    return tag("meta", http_equiv="Content-Security-Policy", content="; ".join(rules))


def script() -> Html:
    """The page's one script, at the end of its body."""
    return tag("script", trusted(SCRIPT))


def filter_box(table_id: str) -> Html:
    """A text box that hides the rows of table `table_id` lacking any of its words."""
    hint = "filter rows: type words that a row must hold, e.g. adam 0.01 completed"
    box = tag("input", class_="filter", type="search", placeholder=hint, data_table=table_id)
    return tag("p", box)


def settings_data(table_id: str, settings: dict[str, dict[str, str]]) -> Html:
    """The jobs' settings as JSON for the page's two-row diff: data, never run (its type is
    not a script's), with `<`, `>` and `&` written as escapes so no value can end the element."""
    text = json.dumps(settings, ensure_ascii=True, sort_keys=True)
    for char in "<>&":
        text = text.replace(char, f"\\u{ord(char):04x}")
    data = tag("script", trusted(text), type="application/json", id=f"{table_id}-settings")
    hint = "tick two jobs (the diff column): the settings that differ show here"
    return join([data, tag("p", hint, id=f"{table_id}-settings-diff")])


def pick_box(job: str) -> Html:
    """A job's tick box for the two-row diff."""
    return tag("input", class_="pick", type="checkbox", data_job=job)


def links(folder: Path, base: Path) -> Html:
    """Links from a page in `base` to the job `folder`, its log and its config."""
    where = os.path.relpath(folder, base)
    parts = [tag("a", "folder", href=trusted(quote(where + "/")))]
    for name, path in CONFIG_LOG_FILES:
        parts.append(tag("a", name, href=trusted(quote(f"{where}/{path}"))))
    return join(parts, " ")

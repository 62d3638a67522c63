"""What makes report.html a page to work with: sortable and filterable tables, links to each
job's folder, log and config, and the Content-Security-Policy that lets only this script run.

The script is a constant: the policy names its SHA-256 (and the style sheet's), and nothing
else may run or load: no other script, no inline handler (markup.tag writes none), no fetch,
no frame, no form. A value read from a job folder reaches the page escaped, so even a crafted
`<script>` in a setting is text, and would be refused by the policy if it were not.
"""

import base64
import hashlib
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


def links(folder: Path, base: Path) -> Html:
    """Links from a page in `base` to the job `folder`, its log and its config."""
    where = os.path.relpath(folder, base)
    parts = [tag("a", "folder", href=trusted(quote(where + "/")))]
    for name, path in CONFIG_LOG_FILES:
        parts.append(tag("a", name, href=trusted(quote(f"{where}/{path}"))))
    return join(parts, " ")

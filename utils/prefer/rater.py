"""The blind A/B rater: two anonymised outputs for one prompt, four buttons, one CSV line a click.

Works on ipywidgets 7.7 and 8 (only Text, HTML, Label, Button, VBox, HBox and Layout). Each click is
appended to preferences.csv and fsynced before the next pair appears. Introduced in notebook 09.
"""

from __future__ import annotations

import html
import random

import ipywidgets as widgets

from utils.prefer.items import pair_items
from utils.prefer.ratings import append_rating, default_path, rating_row

BUTTONS = {"a": "A is better", "b": "B is better", "tie": "tie", "skip": "skip"}
_BOX = ("white-space:pre-wrap;font-family:monospace;border:1px solid #ccc;border-radius:4px;"
        "padding:6px;min-height:4em;overflow-wrap:anywhere")  # long tokens wrap, never spill


def _panel(title: str, text: str) -> str:
    return f"<b>{html.escape(title)}</b><div style=\"{_BOX}\">{html.escape(text)}</div>"


class ABRater:
    """A/B preference widget over items {prompt, outputs: {system: text}}. Notebook 09.

    Items with three or more systems are split into every pair; the pairs are shuffled and
    each pair's A/B sides are drawn at random, both from `seed`. Drive it in code with
    `rater.name.value = "ana"; rater.buttons["a"].click()`.
    """

    def __init__(self, items, path=None, seed: int = 0):
        rng = random.Random(seed)
        self.pairs = pair_items(items)
        rng.shuffle(self.pairs)
        self.sides = [tuple(rng.sample(sorted(p["outputs"]), 2)) for p in self.pairs]  # (A, B)
        self.path = default_path() if path is None else path
        self.position = 0
        self.records = []
        self.name = widgets.Text(description="Rater", placeholder="type your name first")
        self.buttons = {key: widgets.Button(description=label) for key, label in BUTTONS.items()}
        for key, button in self.buttons.items():
            button.on_click(lambda _button, key=key: self.rate(key))
        self.progress = widgets.Label()
        self.prompt = widgets.HTML()
        half = dict(layout=widgets.Layout(width="50%"))  # A and B side by side, equal widths
        self.output_a, self.output_b = widgets.HTML(**half), widgets.HTML(**half)
        self.message = widgets.HTML()
        self.widget = widgets.VBox([
            widgets.HBox([self.name, self.progress]), self.prompt,
            widgets.HBox([self.output_a, self.output_b]),
            widgets.HBox(list(self.buttons.values())), self.message])
        self._show()

    @property
    def done(self) -> bool:
        return self.position >= len(self.pairs)

    def current(self) -> dict:
        """What is on screen now: prompt, text_a, text_b and, hidden from the rater, system_a/b."""
        pair, (system_a, system_b) = self.pairs[self.position], self.sides[self.position]
        return {"prompt_id": pair["prompt_id"], "prompt": pair["prompt"],
                "system_a": system_a, "system_b": system_b,
                "text_a": pair["outputs"][system_a], "text_b": pair["outputs"][system_b]}

    def _show(self) -> None:
        total = len(self.pairs)
        if self.done:
            self.progress.value = f"{total} of {total} rated"
            for button in self.buttons.values():
                button.disabled = True
            self.message.value = (f"<b>Thank you!</b> All {total} pairs are rated and saved "
                                  f"in {html.escape(str(self.path))}.")
            return
        shown = self.current()
        self.progress.value = f"pair {self.position + 1} of {total}"
        self.prompt.value = _panel("Prompt", shown["prompt"])
        self.output_a.value = _panel("A", shown["text_a"])
        self.output_b.value = _panel("B", shown["text_b"])

    def rate(self, choice: str) -> None:
        """Record a choice (a, b, tie or skip) for the pair on screen, then show the next."""
        rater = self.name.value.strip()
        if self.done:
            return
        if not rater:
            self.message.value = ("<b style='color:#b00'>Please type your name in the Rater box "
                                  "first.</b> Nothing was recorded.")
            return
        shown = self.current()
        row = rating_row(rater, shown, shown["system_a"], shown["system_b"], choice)
        try:
            append_rating(self.path, row)
        except OSError as error:  # a full disk or a read-only folder: say so, stay on this pair
            self.message.value = f"<b style='color:#b00'>Could not save: {html.escape(str(error))}</b>"
            return
        self.records.append(row)
        self.name.disabled = True  # one session, one rater: the name cannot change halfway
        self.message.value = f"Saved: pair {self.position + 1} ({choice})."
        self.position += 1
        self._show()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

"""ipywidgets for the notebooks: the generation playground (notebook 03).

Only widgets that ipywidgets 7 (Colab) and 8 share are used: Text/Textarea, FloatSlider,
IntSlider, Checkbox, Button.on_click, Output, HBox/VBox, Layout. Each widget keeps its
parts as attributes, so tests can set values and press `button.click()` without a browser.
"""

from __future__ import annotations

import ipywidgets as widgets

from utils.config import DecodeConfig, get_profile
from utils.generate.batched import generate_batched
from utils.generate.decoding import context_length

WIDE = widgets.Layout(width="95%")
LABEL = {"description_width": "initial"}  # show the full argument names


# ---------------------------------------------------------------- generation playground


def generate_text(model, tokenizer, prompt: str, **settings) -> str:
    """The continuation of a prompt under the given `generate` settings (new text only).

    Not reseeded: every click samples afresh (utils.generate.batched.generate_batched with seed=None).
    """
    return generate_batched(model, tokenizer, [prompt], settings, seed=None, batch_size=1)[0]


class GenerationPlayground:
    """Prompt box, decoding sliders, a Generate button and an output area. Notebook 03.

    Sliders start at the profile's decoding defaults (temperature 0.7, top-p 0.95,
    repetition penalty 1.1). `do_sample` off means greedy search (1 beam) or beam search.
    """

    def __init__(self, model, tokenizer, decode: DecodeConfig | None = None,
                 prompt: str = "The lighthouse keeper", generate_fn=None):
        decode = decode or get_profile().decode
        self.model, self.tokenizer = model, tokenizer
        self.generate_fn = generate_fn or generate_text
        self.prompt = widgets.Textarea(value=prompt, description="prompt", style=LABEL,
                                       layout=widgets.Layout(width="95%", height="80px"))
        self.do_sample = widgets.Checkbox(value=decode.do_sample, description="do_sample", style=LABEL)
        self.temperature = _slider(widgets.FloatSlider, "temperature", decode.temperature, 0.05, 2.0, 0.05)
        self.top_p = _slider(widgets.FloatSlider, "top_p", decode.top_p, 0.05, 1.0, 0.01)
        self.top_k = _slider(widgets.IntSlider, "top_k", decode.top_k, 0, 200, 1)
        self.num_beams = _slider(widgets.IntSlider, "num_beams", decode.num_beams, 1, 8, 1)
        self.repetition_penalty = _slider(widgets.FloatSlider, "repetition_penalty",
                                          decode.repetition_penalty, 1.0, 2.0, 0.05)
        longest = min(256, context_length(model) - 1)  # leave at least one prompt token
        self.max_new_tokens = _slider(widgets.IntSlider, "max_new_tokens", decode.max_new_tokens,
                                      1, longest, 1)
        self.button = widgets.Button(description="Generate", button_style="primary")
        self.output = widgets.Output(layout=WIDE)
        self.button.on_click(self._on_click)
        sliders = [self.temperature, self.top_p, self.top_k, self.num_beams,
                   self.repetition_penalty, self.max_new_tokens]
        self.widget = widgets.VBox([self.prompt, widgets.HBox([self.do_sample, self.button]),
                                    *sliders, self.output])

    def settings(self) -> dict:
        """The `generate` keyword arguments the controls describe right now."""
        settings = {"do_sample": self.do_sample.value, "num_beams": self.num_beams.value,
                    "repetition_penalty": self.repetition_penalty.value,
                    "max_new_tokens": self.max_new_tokens.value}
        if self.do_sample.value:  # the sampling knobs mean nothing to greedy or beam search
            settings.update(temperature=self.temperature.value, top_p=self.top_p.value,
                            top_k=self.top_k.value)
        return settings

    def _on_click(self, _button=None) -> None:
        settings = self.settings()
        try:
            text = self.prompt.value + self.generate_fn(self.model, self.tokenizer,
                                                        self.prompt.value, **settings)
        except ValueError as error:  # a bad setting or prompt: say so where the user looks
            text = f"error: {error}"
        shown = ", ".join(f"{k}={v}" for k, v in settings.items())
        self.output.outputs = ()  # clear; works without a kernel, unlike clear_output()
        self.output.append_stdout(f"[{shown}]\n{text}\n")

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def _slider(cls, name: str, value, low, high, step):
    return cls(value=value, min=low, max=high, step=step, description=name, style=LABEL,
               layout=WIDE, continuous_update=False)

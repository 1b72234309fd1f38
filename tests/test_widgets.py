"""utils.generate.playground: the generation playground, driven by setting values and pressing its button."""

import pytest
import transformers

from utils.config import get_profile
from utils.generate.playground import GenerationPlayground, generate_text
from utils.models.loading import load_model_and_tokenizer


@pytest.fixture(scope="module")
def tiny():
    transformers.logging.set_verbosity_error()
    model, tokenizer = load_model_and_tokenizer("tiny")
    return model.eval(), tokenizer


def _shown(playground) -> str:
    return "".join(o["text"] for o in playground.output.outputs)


def test_sliders_start_at_the_profile_defaults(tiny):
    pg = GenerationPlayground(*tiny)
    decode = get_profile("tiny").decode
    assert (pg.temperature.value, pg.top_p.value) == (0.7, 0.95)
    assert pg.repetition_penalty.value == decode.repetition_penalty == 1.2  # the pocket model's
    assert pg.max_new_tokens.value == decode.max_new_tokens and pg.num_beams.value == 1
    assert pg.max_new_tokens.max == 255  # 256 positions, one left for the prompt


def test_button_click_sends_the_settings_to_generate(tiny, monkeypatch):
    model, tokenizer = tiny
    calls = []
    real_generate = model.generate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    pg = GenerationPlayground(model, tokenizer)
    pg.prompt.value = "Rain on the slate roof"
    pg.temperature.value, pg.top_p.value, pg.top_k.value = 1.3, 0.8, 17
    pg.repetition_penalty.value, pg.max_new_tokens.value = 1.25, 6
    before = _shown(pg)
    pg.button.click()
    assert _shown(pg) != before and "Rain on the slate roof" in _shown(pg)
    assert "error" not in _shown(pg)
    sent = calls[-1]["generation_config"]  # utils.generate.batched hands generate one config
    assert sent.do_sample is True and sent.num_beams == 1
    # temperature, top-k and top-p travel as warpers, in Hugging Face's order (utils/generate/nucleus.py)
    temperature, top_k, top_p = calls[-1]["logits_processor"]
    assert (temperature.temperature, top_k.top_k, top_p.top_p) == (1.3, 17, 0.8)
    assert (sent.temperature, sent.top_k, sent.top_p) == (1.0, 0, 1.0)  # not applied twice
    assert (sent.repetition_penalty, sent.max_new_tokens) == (1.25, 6)

    pg.do_sample.value, pg.num_beams.value = False, 3  # beam search: no sampling knobs sent
    pg.button.click()
    sent = calls[-1]["generation_config"]
    assert sent.do_sample is False and sent.num_beams == 3
    assert "temperature" not in pg.settings() and "top_p" not in pg.settings()
    assert _shown(pg).startswith("[do_sample=False, num_beams=3")


def test_generate_fn_receives_prompt_and_settings(tiny):
    seen = []

    def fake(model, tokenizer, prompt, **settings):
        seen.append((prompt, settings))
        return " and the gulls"

    pg = GenerationPlayground(*tiny, generate_fn=fake, prompt="Low tide")
    pg.num_beams.value = 2
    pg.button.click()
    assert seen[0][0] == "Low tide" and seen[0][1]["num_beams"] == 2
    assert "Low tide and the gulls" in _shown(pg)
    pg.button.click()  # the area is replaced, not appended to
    assert _shown(pg).count("Low tide and the gulls") == 1


def test_errors_are_shown_in_the_output_area(tiny):
    def fails(model, tokenizer, prompt, **settings):
        raise ValueError("top_p must be in (0, 1], got 0")

    pg = GenerationPlayground(*tiny, generate_fn=fails)
    pg.button.click()
    assert "error: top_p must be in (0, 1]" in _shown(pg)


def test_generate_text_from_an_empty_prompt_and_bad_settings(tiny, monkeypatch):
    model, tokenizer = tiny
    inputs = []
    real_generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: inputs.append(kw["input_ids"]) or real_generate(**kw))
    text = generate_text(model, tokenizer, "", do_sample=False, num_beams=1, max_new_tokens=4)
    assert isinstance(text, str) and inputs[0].tolist() == [[tokenizer.bos_token_id]]  # <|endoftext|>
    with pytest.raises(ValueError, match="temperature"):
        generate_text(model, tokenizer, "x", do_sample=True, temperature=0.0, max_new_tokens=4)
    with pytest.raises(ValueError, match="num_beams"):
        generate_text(model, tokenizer, "x", num_beams=0, max_new_tokens=4)


def test_the_widget_tree_uses_only_widgets_common_to_ipywidgets_7_and_8(tiny):
    import ipywidgets as widgets

    common = (widgets.Textarea, widgets.Text, widgets.FloatSlider, widgets.IntSlider, widgets.Checkbox,
              widgets.Button, widgets.Output, widgets.HBox, widgets.VBox)

    def walk(w):
        yield w
        for child in getattr(w, "children", ()):
            yield from walk(child)

    assert all(type(w) in common for w in walk(GenerationPlayground(*tiny).widget))

"""The run's report: report.md from config.json, metrics.json and samples.jsonl. `report` stage.
"""

from __future__ import annotations

from pathlib import Path

from utils.runs.registry import CONFIG, METRICS, read_json, read_samples


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def seed_table(stage2: dict) -> str:
    """Stage 2 as one row of the seed's table: batch, accumulation, epochs, lr, losses."""
    head = "| batch | accumulation | epochs | learning rate | training loss | val loss | test loss |"
    keys = ("per_device_train_batch_size", "gradient_accumulation_steps", "epochs", "learning_rate",
            "train_loss", "val_loss", "test_loss")
    row = "| " + " | ".join(_fmt(stage2.get(k, "")) for k in keys) + " |"
    return "\n".join([head, "|" + "---|" * len(keys), row])


def render_report(run_dir: Path, png_name: str | None = None, samples_per_model: int = 3) -> str:
    """report.md of a run: what ran, every metric, the seed-format table, curves, samples."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / CONFIG, {})
    metrics = read_json(run_dir / METRICS, {})
    lines = [f"# Run {run_dir.name}", "",
             f"- profile: {config.get('profile', {}).get('name')} "
             f"({config.get('profile', {}).get('description')})",
             f"- git commit: {config.get('git_commit')}", f"- started: {config.get('started')}",
             f"- command: `{config.get('command')}`", "", "## Metrics", "",
             "| section | metric | value |", "|---|---|---|"]
    for section, values in metrics.items():
        for key, value in (values.items() if isinstance(values, dict) else [("value", values)]):
            lines.append(f"| {section} | {key} | {_fmt(value)} |")
    if "stage2" in metrics:
        lines += ["", "## Stage 2 in the seed's format", "", seed_table(metrics["stage2"])]
    if png_name:
        lines += ["", "## Loss curves", "", f"![loss curves]({png_name})"]
    samples = read_samples(run_dir)
    if samples:
        lines += ["", "## Sample generations", ""]
        for model in dict.fromkeys(s.get("model") for s in samples):  # a hand edit may drop keys
            for s in [s for s in samples if s.get("model") == model][:samples_per_model]:
                prompt, text = (str(s.get(key, "")).strip() for key in ("prompt", "generation"))
                lines += [f"**{model}**, prompt:", "", "```", prompt, "```",
                          "generation:", "", "```", text, "```", ""]
    return "\n".join(lines) + "\n"

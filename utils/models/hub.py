"""What a real profile says when the Hugging Face hub cannot be reached: one error, one help text.
"""

from __future__ import annotations

HUB_HELP = (
    "Could not load {what!r} from the Hugging Face hub ({error}). This profile needs the hub: "
    "check your internet connection (and `huggingface-cli login` if the repo is gated), or run "
    "offline with POET_PROFILE=tiny, or pass a local folder saved with save_pretrained."
)


class HubUnavailableError(RuntimeError):
    """A real profile could not reach the hub; the message says what to do instead."""

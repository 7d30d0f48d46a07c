"""trioproxy: an OpenAI-compatible proxy for Qwen3-Coder, Cerebras first and Chutes as fallback."""

__version__ = "0.1.0"

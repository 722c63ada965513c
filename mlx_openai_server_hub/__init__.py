"""mlx-openai-server-hub: many MLX models behind one OpenAI-compatible port."""

__version__ = "0.1.0"

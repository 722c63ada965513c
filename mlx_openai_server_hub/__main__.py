"""`python -m mlx_openai_server_hub`: the `mlx-openai-server-hub` command."""

from mlx_openai_server_hub.cli import main

if __name__ == "__main__":
    main()

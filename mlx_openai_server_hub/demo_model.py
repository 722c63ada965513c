"""Build a tiny, random-weight llama model that the real mlx-openai-server worker can load.

No model may be downloaded from a hub here, so tests and demos make their own model::

    <worker-venv>/bin/python demo_model.py OUTDIR

OUTDIR then holds a complete MLX/Hugging Face style model directory:

- ``tokenizer.json``: a word-level tokenizer (``tokenizers`` WordLevel model, Whitespace
  pre-tokenizer) over a fixed vocabulary of ~150 words and punctuation marks. The vocabulary
  must stay above the worker's default ``top_k`` (20), or sampling fails;
- ``tokenizer_config.json``: ``PreTrainedTokenizerFast`` with bos/eos/unk/pad tokens and a
  one-line Jinja ``chat_template``;
- ``config.json``: a tiny llama (hidden 32, 2 layers, 4 heads, 2 KV heads, intermediate 64,
  tied embeddings);
- ``model.safetensors``: weights of ``mlx_lm.models.llama.Model`` initialised from a fixed
  seed, so the same files come out on every run.

The model answers gibberish, but every worker path is real: loading, ``/health``,
``/v1/models``, ``/v1/chat/completions`` with and without ``stream``, usage counts.

This file runs under the *worker's* Python (the mlx-openai-server virtualenv), so it imports
only ``mlx``, ``mlx_lm``, ``tokenizers`` and the standard library, and never anything from
``mlx_openai_server_hub``. The heavy imports happen inside functions, so the module can also
be imported where mlx is not installed (for example to read :data:`REQUIRED_FILES`).

The build is idempotent: when OUTDIR already holds a complete model (every file present and
``config.json`` carrying this builder's format marker), it exits 0 at once. Every file is
written to a temporary name and renamed into place, and ``config.json`` is written last, so
an interrupted build is never taken for a complete one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

#: Bump when the produced files change, so old model directories are rebuilt.
FORMAT_VERSION = 1
FORMAT_KEY = "mlx_hub_demo_model_version"

REQUIRED_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors",
    "config.json",
)

DEFAULT_SEED = 1234

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>")
PAD, BOS, EOS, UNK = SPECIAL_TOKENS

PUNCTUATION: tuple[str, ...] = (".", ",", ":", ";", "?", "!", "'", '"', "-", "(", ")")

WORDS: tuple[str, ...] = (
    # roles used by the chat template
    "system", "user", "assistant",
    # function words
    "the", "a", "an", "and", "or", "but", "if", "then", "so", "of", "to", "in", "on", "at",
    "by", "for", "with", "from", "as", "is", "are", "was", "were", "be", "been", "it", "this",
    "that", "these", "those", "i", "you", "he", "she", "we", "they", "me", "him", "her", "us",
    "them", "my", "your", "our", "their", "what", "which", "who", "when", "where", "why", "how",
    "not", "no", "yes", "can", "will", "would", "should", "could", "do", "does", "did", "have",
    "has", "had", "there", "here", "all", "some", "any", "more", "most", "very", "too", "just",
    # content words
    "hello", "hi", "thanks", "please", "model", "server", "worker", "hub", "port", "request",
    "response", "token", "tokens", "text", "word", "words", "answer", "question", "test",
    "small", "large", "tiny", "fast", "slow", "good", "bad", "new", "old", "first", "last",
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "red", "green", "blue", "black", "white", "cat", "dog", "bird", "fish", "tree", "sun",
    "moon", "star", "water", "fire", "earth", "air", "time", "day", "night", "year", "world",
    "say", "tell", "write", "read", "run", "stop", "start", "load", "make", "know", "think",
    "see", "go", "come", "give", "take", "help", "work", "play", "count", "story",
)  # fmt: skip

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] }} : "
    "{{ message['content'] }} . {% endfor %}{% if add_generation_prompt %}assistant :{% endif %}"
)


def vocabulary() -> dict[str, int]:
    """Return the fixed token -> id map: special tokens first, then punctuation, then words."""
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *PUNCTUATION, *WORDS):
        if token not in vocab:
            vocab[token] = len(vocab)
    return vocab


def model_config(vocab_size: int) -> dict[str, Any]:
    """Return config.json for the tiny llama."""
    vocab = vocabulary()
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
        "bos_token_id": vocab[BOS],
        "eos_token_id": vocab[EOS],
        "pad_token_id": vocab[PAD],
        "torch_dtype": "float32",
        FORMAT_KEY: FORMAT_VERSION,
    }


def tokenizer_config() -> dict[str, Any]:
    """Return tokenizer_config.json (a fast tokenizer with a one-line chat template)."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": PAD,
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }


def is_complete(outdir: Path) -> bool:
    """True when ``outdir`` holds every file of a model built by this format version."""
    if not all((outdir / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        config = json.loads((outdir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get(FORMAT_KEY) == FORMAT_VERSION


def _tmp_name(path: Path) -> Path:
    # Keep the suffix: mx.save_safetensors appends ".safetensors" to names without it.
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = _tmp_name(path)
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _write_tokenizer(path: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = vocabulary()
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    # Joins word pieces with spaces (none carry the "##" prefix), and tidies " ." etc.
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tmp = _tmp_name(path)
    tokenizer.save(str(tmp))
    os.replace(tmp, path)
    return tokenizer.get_vocab_size()


def _write_weights(path: Path, config: dict[str, Any], seed: int) -> int:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.llama import Model, ModelArgs

    mx.random.seed(seed)
    model = Model(ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    weights = dict(tree_flatten(model.parameters()))
    tmp = _tmp_name(path)
    mx.save_safetensors(str(tmp), weights, metadata={"format": "mlx"})
    os.replace(tmp, path)
    return sum(int(v.size) for v in weights.values())


def build(outdir: Path, *, seed: int = DEFAULT_SEED, force: bool = False) -> Path:
    """Build the tiny model into ``outdir`` (created if needed) and return ``outdir``."""
    outdir = Path(outdir).resolve()
    if not force and is_complete(outdir):
        return outdir
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "config.json").unlink(missing_ok=True)  # written last: marks completion

    vocab_size = _write_tokenizer(outdir / "tokenizer.json")
    _write_json(outdir / "tokenizer_config.json", tokenizer_config())
    config = model_config(vocab_size)
    _write_weights(outdir / "model.safetensors", config, seed)
    _write_json(outdir / "config.json", config)
    return outdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("outdir", type=Path, help="directory to write the model into")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="weight init seed")
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = parser.parse_args(argv)

    outdir: Path = args.outdir.resolve()
    if not args.force and is_complete(outdir):
        print(f"tiny model already complete: {outdir}", file=sys.stderr)
        print(outdir)
        return 0
    build(outdir, seed=args.seed, force=True)
    print(f"built tiny model ({len(vocabulary())} tokens) in {outdir}", file=sys.stderr)
    print(outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A character-level tokenizer for arith, saved as a standard ``tokenizer.json``.

One token per printable ASCII character and newline, plus ``<pad>``, ``<eos>`` and ``<unk>``.
"""

from __future__ import annotations

import string

CHARS = sorted(set(string.printable) - set("\t\r\x0b\x0c"))
SPECIALS = ["<pad>", "<eos>", "<unk>"]
# Chat messages render as the arith prompt: each message's text on its own line.
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] | trim }}\n{% endfor %}"


def build_char_tokenizer():
    """A ``PreTrainedTokenizerFast`` that maps every character to its own token."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.chat_template = CHAT_TEMPLATE
    return tok

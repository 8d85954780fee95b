"""The tokenizer of the test models: ``tokenizer.json`` and ``tokenizer_config.json``.

The tokenizer: ids 0-2 are the added special tokens ``<|endoftext|>``, ``<|im_start|>``,
``<|im_end|>``; ids 3-258 the 256 byte-level alphabet symbols in code-point order; then the
merges learned greedily (most frequent pair, ties broken lexicographically) from an embedded
English text, until the tokenizer vocabulary reaches the preset's size. Digits are always split
one by one, so no merge contains a digit. bos = ``<|endoftext|>`` (0), eos = ``<|im_end|>`` (2),
as in SmolLM2.

The text yields 719 tokens at most (460 merges). A larger vocabulary (a published shape's:
128,256 for Llama 3) is filled with placeholder tokens ``<|reserved_ID|>`` (ID their id), in the
BPE vocabulary but produced by no merge: they load in a fraction of a second, never come out of
encoding, and decode to their own text.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import TYPE_CHECKING

from tokenizers import pre_tokenizers

if TYPE_CHECKING:
    from maskc.testmodels.spec import TinySpec

#: The added special tokens, in id order (ids 0, 1, 2).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BOS_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
BOS_TOKEN_ID = 0
EOS_TOKEN_ID = 2
#: Number of ids before the first merge: 3 special tokens + 256 byte-level symbols.
BASE_VOCAB = len(SPECIAL_TOKENS) + 256
#: A small ChatML template (SmolLM2 / Qwen style).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

#: The text the BPE merges are learned from: plain English with digits and punctuation.
CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the fox runs \
into the forest. In the morning, the farmer counts 12 sheep, 7 cows and 3 horses; by the \
evening there are 15 sheep, because 3 lambs were born in the night.

A compiler reads a program and writes another program. This compiler reads the weights of a \
language model and writes the masks of a chip: every weight becomes a pattern of metal on \
silicon, and the chip then runs the model without any memory for the weights at all. The \
process is slow to start but fast to run, and the model can never be changed again.

"Where are you going?" asked the teacher. "To the library," said the student, "to read \
about the history of the world." The library opened in 1887 and holds more than 40,000 \
books, 250 maps and 9 old clocks. Its doors open at 8:30 in the morning and close at 6:00 in \
the evening, every day except Sunday.

Numbers such as 3.14159, 2.71828 and 1,000,000 appear in many texts. A recipe might say: mix \
2 cups of flour with 1 cup of water, add a pinch of salt, and bake for 45 minutes at 180 \
degrees. The result should be golden on the outside and soft on the inside (if it is not, \
try again tomorrow).

Questions, answers, and more questions: what is the meaning of a word? Who writes the \
rules of a language? Why do some words sound the same but mean different things? The \
answers are not simple, but the questions are worth asking again and again.

The sun rises in the east and sets in the west. The stars come out at night, and the moon \
moves through the sky in about 29 days. Long ago, people used the stars to find their way \
across the sea; today a small machine in every pocket can tell where it is to within a few \
meters.
"""


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Digits one by one, then GPT-2 byte-level splitting (the tokenizer.json pre_tokenizer)."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def learn_merges(text: str, n_tokens: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Greedy byte-level BPE on ``text`` until the vocabulary has ``n_tokens`` entries.

    Returns ``(vocab, merges)``: ``vocab`` maps token -> id (specials 0-2, the byte alphabet
    3-258 in code-point order, then merged tokens in creation order); ``merges`` in rank order.
    At each step the most frequent adjacent pair wins, ties broken by the lexicographically
    smallest ``(left, right)``; a merge whose result already exists is recorded but adds no id.
    Stops early (fewer tokens) only if the text runs out of pairs.
    """
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    counts = Counter(piece for piece, _ in _pre_tokenizer().pre_tokenize_str(text))
    words = [[tuple(w), c] for w, c in sorted(counts.items())]
    merges: list[tuple[str, str]] = []
    while len(vocab) < n_tokens:
        pairs: Counter[tuple[str, str]] = Counter()
        for sym, c in words:
            for a, b in itertools.pairwise(sym):
                pairs[a, b] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = best[0] + best[1]
        if merged not in vocab:
            vocab[merged] = len(vocab)
        for entry in words:
            sym = entry[0]
            if len(sym) < 2:
                continue
            new, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and (sym[i], sym[i + 1]) == best:
                    new.append(merged)
                    i += 2
                else:
                    new.append(sym[i])
                    i += 1
            entry[0] = tuple(new)
    return vocab, merges


def tokenizer_json(n_tokens: int) -> dict:
    """The ``tokenizer.json`` document (tokenizers schema 1.0) with ``n_tokens`` tokens.

    Merges are written as ``"left right"`` strings, which every ``tokenizers`` release reads
    (byte-level symbols never contain a literal space). Ids past the merges the text yields
    are placeholder tokens (module docstring).
    """
    vocab, merges = learn_merges(CORPUS, n_tokens)
    for i in range(len(vocab), n_tokens):
        vocab[placeholder_token(i)] = i
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": tok,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, tok in enumerate(SPECIAL_TOKENS)
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", **byte_level},
            ],
        },
        "post_processor": {"type": "ByteLevel", **byte_level, "trim_offsets": False},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": vocab,
            "merges": [f"{a} {b}" for a, b in merges],
        },
    }


def placeholder_token(token_id: int) -> str:
    """The placeholder token of id ``token_id``: printable ASCII, so its byte-level form is
    itself and it decodes to its own text."""
    return f"<|reserved_{token_id}|>"


def tokenizer_config_json(spec: TinySpec) -> dict:
    """``tokenizer_config.json``: special-token strings, no automatic BOS, ChatML template."""
    return {
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {
                "content": tok,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, tok in enumerate(SPECIAL_TOKENS)
        },
        "additional_special_tokens": list(SPECIAL_TOKENS[1:]),
        "bos_token": BOS_TOKEN,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "model_max_length": spec.max_position_embeddings,
        "pad_token": EOS_TOKEN,
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": BOS_TOKEN,
    }

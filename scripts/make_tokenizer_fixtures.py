#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizers.json: the token ids the reference implementations give for
edge-case strings and text excerpts, for lintime's tokenizer tests. GPT-2's byte-level BPE by
Hugging Face `tokenizers` (from ../shared/data/gpt2-vocab.json + gpt2-merges.txt, <|endoftext|>
special), Llama 2's SentencePiece model by the `sentencepiece` package. Run once with both
packages installed (a throwaway virtualenv):

  python3 -m venv /tmp/fx && /tmp/fx/bin/pip install tokenizers sentencepiece
  /tmp/fx/bin/python scripts/make_tokenizer_fixtures.py ../shared/data tests/fixtures/tokenizers.json
"""
import json
import os
import sys

import sentencepiece
import tokenizers

EDGE_CASES = [
    "", "Hello world", "Hello, world!", "  leading spaces", "trailing space ", "multiple   spaces   between",
    "tabs\tand\nnewlines\n\n\nparagraph\r\nwindows", "don't it's we're I've I'm we'll he'd", "DON'T 'S 'sx",
    "numbers 12345 and 3.14159, 1,000,000", "unicode: café naïve 日本語 Ελληνικά русский", "emoji 😀 👍🏽 🇫🇷",
    "mixed123abc___--==", "x<|endoftext|>y", "<|endoftext|>", "non\u00a0breaking\u2003spaces\u3000here",
    "  \n  ", " ", "\n", "'", "''''", "a's b't c're", "ends with newline\n", "math: ∑ x² ≤ ∞ ½",
    "zero\u200bwidth", "١٢٣ Arabic-Indic digits, Ⅻ roman numeral",
]


def byte_symbols():
    """GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the rest for
    U+0100 onwards, in byte order."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return symbols


def raw_piece(symbol_string):
    to_byte = {symbol: byte for byte, symbol in byte_symbols().items()}
    return bytes(to_byte[c] for c in symbol_string).decode("utf-8")


def excerpts(data_dir):
    result = {}
    for name, start, length in [("tinyshakespeare.txt", 0, 4000), ("wikitext2-valid.txt", 10000, 4000)]:
        with open(os.path.join(data_dir, name), encoding="utf-8") as handle:
            text = handle.read()
        result[name] = {"start": start, "length": length, "text": text[start:start + length]}
    return result


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: make_tokenizer_fixtures.py DATA_DIR OUT.json")
    data_dir, out = sys.argv[1], sys.argv[2]
    gpt2 = tokenizers.ByteLevelBPETokenizer(os.path.join(data_dir, "gpt2-vocab.json"),
                                            os.path.join(data_dir, "gpt2-merges.txt"))
    gpt2.add_special_tokens(["<|endoftext|>"])
    llama = sentencepiece.SentencePieceProcessor(model_file=os.path.join(data_dir, "llama2-tokenizer.model"))
    cases = [{"text": text, "gpt2": gpt2.encode(text).ids, "llama2": llama.encode(text)} for text in EDGE_CASES]
    texts = excerpts(data_dir)
    document = {
        "generator": "scripts/make_tokenizer_fixtures.py",
        "versions": {"tokenizers": tokenizers.__version__, "sentencepiece": sentencepiece.__version__},
        "cases": cases,
        "excerpts": [{"file": name, "start": e["start"], "length": e["length"],
                      "gpt2": gpt2.encode(e["text"]).ids, "llama2": llama.encode(e["text"])}
                     for name, e in texts.items()],
        "gpt2_pre_tokens": {text: [raw_piece(piece) for piece, _ in gpt2.pre_tokenizer.pre_tokenize_str(text)]
                            for text in EDGE_CASES if "<|endoftext|>" not in text},
    }
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(document, handle, ensure_ascii=False, indent=None)
        handle.write("\n")


if __name__ == "__main__":
    main()

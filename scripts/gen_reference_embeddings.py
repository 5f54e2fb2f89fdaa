#!/usr/bin/env python3
"""Regenerate tests/fixtures/minilm_reference.json with sentence-transformers.

Usage:
    python scripts/gen_reference_embeddings.py [MODEL_DIR] [--out PATH]

MODEL_DIR is a sentence-transformers folder of all-MiniLM-L6-v2 (config.json,
tokenizer.json, model.safetensors, 1_Pooling/, modules.json with Normalize).
It defaults to the MINILM_DIR environment variable.  The model runs on CPU
torch; the vectors are what ``SentenceTransformer.encode`` returns, i.e. mean
pooled and L2-normalised by the model's own module list.

The fixture is the ground truth for the e2e tests in tests/e2e/:

* ``sentences`` / ``embeddings`` / ``token_counts`` / ``token_ids``: inputs
  that fit the 256-token window (each is at most 250 tokens including
  [CLS] and [SEP]); ``token_ids`` are the tokenizer's ids, specials included.
* ``long_inputs``: texts longer than 256 tokens, with the vector
  sentence-transformers gives for them (it cuts them to 256 tokens, i.e.
  [CLS] + the first 254 word pieces + [SEP]), for the ``truncate`` tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "minilm_reference.json"

MAX_SEQ = 256
MAX_FIXTURE_TOKENS = 250  # keep a margin under the model's window

# Paragraphs the long inputs are cut from (each is over 200 tokens; two
# joined together are well over 256).
LONG_PARAGRAPHS = [
    (
        "The history of the printing press begins in the middle of the fifteenth "
        "century, when Johannes Gutenberg combined several existing technologies "
        "into a system for mass producing written material. Movable metal type, "
        "oil based ink and a screw press adapted from wine making allowed a small "
        "workshop to print hundreds of identical pages in a day, where a scribe "
        "would have needed months to copy a single book by hand. Within fifty "
        "years presses had spread to more than two hundred cities across Europe, "
        "and millions of volumes were in circulation. Prices fell, literacy rose, "
        "and ideas that once travelled slowly between monasteries and universities "
        "could now reach merchants, artisans and farmers. Historians still debate "
        "how directly the press caused the Reformation, the scientific revolution "
        "and the rise of vernacular literature, but few doubt that cheap, "
        "standardised text changed how people argued, learned and remembered. "
        "Printers became publishers, editors and booksellers, and the workshop "
        "itself turned into a meeting place for scholars who corrected proofs, "
        "debated translations and exchanged letters with colleagues in distant "
        "countries. Governments and churches soon tried to license presses and "
        "censor what they produced, which in turn encouraged anonymous pamphlets, "
        "smuggled editions and new arguments about the freedom of the press."
    ),
    (
        "A distributed database must decide what to do when the network between "
        "its replicas fails. If every replica keeps accepting writes, clients stay "
        "available but may observe conflicting values that later have to be "
        "reconciled; if replicas refuse writes until they can reach a majority, "
        "the data stays consistent but some clients see errors during the outage. "
        "Engineers usually describe this trade-off with the CAP theorem, although "
        "in practice the interesting choices concern latency as much as "
        "partitions: waiting for a quorum in another region adds tens of "
        "milliseconds to every request even when nothing is broken. Systems such "
        "as consensus based key value stores elect a leader, replicate a log of "
        "commands and apply them in the same order everywhere, while eventually "
        "consistent stores gossip updates and merge them with vector clocks or "
        "conflict free replicated data types. Operators then tune timeouts, "
        "retries, hedged requests and read repair so that the common case is fast "
        "and the rare failure is survivable. Good observability matters as much as "
        "the algorithm itself, because a cluster that silently diverges is far "
        "harder to repair than one that fails loudly and early, and because the "
        "people on call need to understand which replica holds which version of "
        "the data before they decide to promote, rebuild or discard it."
    ),
    (
        "Sourdough bread is leavened by a culture of wild yeasts and lactic acid "
        "bacteria rather than by commercial baker's yeast. A baker keeps the "
        "starter alive by feeding it flour and water every day, discarding part of "
        "it so that the population stays active and the acidity stays in balance. "
        "To make a loaf, a portion of ripe starter is mixed with more flour, water "
        "and salt, then left to ferment for many hours while the dough is stretched "
        "and folded to build gluten strength. The long fermentation develops a "
        "complex, slightly sour flavour and an open, irregular crumb, and it also "
        "breaks down some of the compounds in wheat that certain people find hard "
        "to digest. After shaping, the dough often rests overnight in a cool place "
        "before it is scored with a sharp blade and baked in a very hot covered pot, "
        "which traps steam so that the crust can expand before it sets. Home bakers "
        "tend to obsess over hydration percentages, flour blends, proofing "
        "temperatures and the exact colour of the crust, but the most important "
        "ingredient is patience, because a starter needs time to mature and every "
        "kitchen has its own climate, its own microbes and its own rhythm that the "
        "baker slowly learns to read over many weeks of trial and error."
    ),
]

SENTENCES = [
    # short
    "Hi",
    "embedding",
    "OK.",
    # ordinary
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email?",
    "Machine learning models can be served efficiently with dynamic batching.",
    "She sells seashells by the seashore, and the shells she sells are surely seashells.",
    # unicode
    "Café crème brûlée à la française, s'il vous plaît — très délicieux!",
    "我喜欢在公园里散步，尤其是在春天的早晨。",
    "東京は日本の首都で、人口が非常に多い都市です。",
    "I love pizza 🍕🔥 and tacos 🌮😀!!",
    "Привет, как дела? Сегодня отличная погода для прогулки.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "Ελληνικά, Deutsch: Straße über Größe, español: ¿dónde está la biblioteca?",
    # punctuation heavy
    "Wait... what?!? No -- really?! (Yes; really.) [Seriously] {ok} <fine> ...",
    "!!!???...,,,;;;:::---___***###@@@$$$%%%^^^&&&",
    # repeated words
    "the the the the the the the the the the the the the the the the",
    # numbers
    "In 2023, revenue grew 12.5% to $4,567,890.12 across 3 regions and 42 stores.",
    "3.14159 2.71828 1.41421 1.73205 0 -1 1e10 0xFF 1,000,000",
    # code snippet
    "def add(a, b):\n    return a + b  # sum of two numbers\n\nprint(add(2, 3))",
    'fn main() { let v: Vec<u32> = (0..10).map(|x| x * x).collect(); println!("{:?}", v); }',
    # mixed case
    "ThIs SeNtEnCe HaS mIxEd CaSe AND SOME SHOUTING in it.",
    "iPhone, eBay, McDonald's, NASA and JavaScript are all names.",
    # leading / trailing whitespace
    "   leading and trailing whitespace around this sentence   ",
    "\ttabs and\nnewlines\tinside the text\n",
    # URL / email-ish
    "Contact support@example.com or visit https://example.com/docs?page=2&lang=en#intro",
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", nargs="?", default=os.environ.get("MINILM_DIR"))
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args()
    if not args.model_dir:
        p.error("give the model folder as argv[1] or set MINILM_DIR")
    return args


def token_ids(tokenizer, text: str) -> list[int]:
    """The tokenizer's ids for text with [CLS]/[SEP], never truncated."""
    return tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"]


def cut_to_tokens(tokenizer, text: str, limit: int) -> str:
    """The longest whole-word prefix of text that is at most limit tokens."""
    words = text.split(" ")
    lo, hi = 1, len(words)
    while lo < hi:  # largest n with len(ids(words[:n])) <= limit
        mid = (lo + hi + 1) // 2
        if len(token_ids(tokenizer, " ".join(words[:mid]))) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def dump(doc: dict) -> str:
    """JSON with one line per top-level list element (small, diffable)."""
    parts = []
    for key, value in doc.items():
        k = json.dumps(key)
        if isinstance(value, list):
            items = ",\n  ".join(json.dumps(v, ensure_ascii=False) for v in value)
            parts.append(f" {k}: [\n  {items}\n ]")
        else:
            parts.append(f" {k}: {json.dumps(value, ensure_ascii=False)}")
    text = "{\n" + ",\n".join(parts) + "\n}\n"
    assert json.loads(text) == json.loads(json.dumps(doc))
    return text


def main() -> int:
    args = parse_args()
    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    import transformers

    transformers.logging.set_verbosity_error()  # "longer than max length" is intended
    torch.manual_seed(0)
    model = SentenceTransformer(args.model_dir, device="cpu")
    if model.max_seq_length != MAX_SEQ:
        print(f"warning: model max_seq_length is {model.max_seq_length}, expected {MAX_SEQ}",
              file=sys.stderr)
    tok = model.tokenizer

    sentences = list(SENTENCES)
    # Long inputs near (but under) the window: each paragraph cut to <= 250
    # tokens, plus a long run of one repeated word.
    for para in LONG_PARAGRAPHS:
        sentences.append(cut_to_tokens(tok, para, MAX_FIXTURE_TOKENS))
    sentences.append(" ".join(["the"] * (MAX_FIXTURE_TOKENS - 2)))
    # One long input in the middle range too.
    sentences.append(cut_to_tokens(tok, LONG_PARAGRAPHS[1], 120))

    ids = [token_ids(tok, s) for s in sentences]
    counts = [len(i) for i in ids]
    for s, c in zip(sentences, counts):
        if c > MAX_FIXTURE_TOKENS:
            raise SystemExit(f"sentence has {c} tokens (> {MAX_FIXTURE_TOKENS}): {s[:60]!r}")
        if c < 3:
            raise SystemExit(f"sentence has no word pieces: {s!r}")

    emb = model.encode(sentences, batch_size=8, convert_to_numpy=True,
                       show_progress_bar=False)
    emb = np.asarray(emb, dtype=np.float32)
    assert emb.shape == (len(sentences), 384), emb.shape
    norms = np.linalg.norm(emb, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-4):
        raise SystemExit(f"vectors are not unit length: {norms}")

    # Cross-check: one at a time gives the same vectors as the batch.
    for i, s in enumerate(sentences):
        single = model.encode([s], convert_to_numpy=True, show_progress_bar=False)[0]
        cos = float(np.dot(single, emb[i]))
        if cos < 0.99999:
            raise SystemExit(f"batch/single mismatch ({cos}) for {s[:60]!r}")

    # Inputs over the window, for truncate=true.
    n = len(LONG_PARAGRAPHS)
    long_texts = [LONG_PARAGRAPHS[k] + " " + LONG_PARAGRAPHS[(k + 1) % n] for k in range(n)]
    long_ids = [token_ids(tok, t) for t in long_texts]
    for t, i in zip(long_texts, long_ids):
        if len(i) <= MAX_SEQ + 10:
            raise SystemExit(f"long paragraph is only {len(i)} tokens: {t[:60]!r}")
    long_emb = np.asarray(model.encode(long_texts, convert_to_numpy=True,
                                       show_progress_bar=False), dtype=np.float32)
    truncated_ids = [i[: MAX_SEQ - 1] + [i[-1]] for i in long_ids]  # keep [SEP]
    # The truncated ids as a direct input must give the same vector.
    for t, tids, e in zip(long_texts, truncated_ids, long_emb):
        with torch.no_grad():
            feats = {
                "input_ids": torch.tensor([tids]),
                "attention_mask": torch.ones(1, len(tids), dtype=torch.long),
                "token_type_ids": torch.zeros(1, len(tids), dtype=torch.long),
            }
            out = model(feats)["sentence_embedding"][0].numpy()
        cos = float(np.dot(out, e))
        if cos < 0.99999:
            raise SystemExit(f"truncation is not [CLS]+254+[SEP] ({cos})")

    def floats(v) -> list[float]:
        return [float(x) for x in v]

    doc = {
        "model": "all-MiniLM-L6-v2",
        "generator": f"sentence-transformers {sentence_transformers.__version__}",
        "torch": torch.__version__,
        "max_seq_length": MAX_SEQ,
        "dimensions": 384,
        "normalized": True,
        "sentences": sentences,
        "embeddings": [floats(v) for v in emb],
        "token_counts": counts,
        "token_ids": ids,
        "long_inputs": [
            {
                "text": t,
                "token_count": len(i),
                "truncated_token_ids": ti,
                "embedding": floats(e),
            }
            for t, i, ti, e in zip(long_texts, long_ids, truncated_ids, long_emb)
        ],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump(doc), encoding="utf-8")
    print(f"wrote {out}: {len(sentences)} sentences, token counts "
          f"{min(counts)}..{max(counts)}, {len(long_texts)} long inputs "
          f"({', '.join(str(len(i)) for i in long_ids)} tokens), "
          f"norms {norms.min():.6f}..{norms.max():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

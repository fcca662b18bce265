"""The export's tokenizer as the server runs it: tokenizer.json through the `tokenizers` library directly.

transformers' fast tokenizer is a wrapper around this same Rust tokenizer (it sets truncation on it and calls
`encode_batch`); called directly, a server skips the wrapper's per-text Python and does not import transformers'
tokenizer classes, which import PyTorch (a served CLINC150 student: 361 MB resident against 655 MB, docs/results/serving.md).
The ids, masks and segments are the wrapper's exactly (tests/test_serve.py compares them on RTE texts and pairs,
inputs past the maximum length and odd strings); an export without tokenizer.json is served through transformers.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from kdqat.runtime.batching import Features

COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


class RustTokenizer:
    """`tokenizer(a, b=None)` -> Features, truncated to `max_length` as transformers does (longest first, on the
    side the export's tokenizer_config.json says); `counts(texts)` -> token counts before truncation. Safe from
    several threads at once (its settings never change after loading; `encode_batch` releases the GIL)."""

    def __init__(self, folder: str | Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        config = json.loads((folder / "tokenizer_config.json").read_text()) if (folder / "tokenizer_config.json").is_file() else {}
        side = config.get("truncation_side", "right")
        self.columns = [c for c in COLUMNS if c in config.get("model_input_names", COLUMNS)]
        self._truncated = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._truncated.no_padding()
        self._truncated.enable_truncation(max_length, strategy="longest_first", direction=side)
        self._whole = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._whole.no_padding()
        self._whole.no_truncation()

    def __call__(self, a: list[str], b: list[str] | None = None) -> Features:
        encodings = self._truncated.encode_batch(list(zip(a, b)) if b is not None else a)
        out: Features = {"input_ids": [e.ids for e in encodings]}
        if "attention_mask" in self.columns:
            out["attention_mask"] = [e.attention_mask for e in encodings]
        if "token_type_ids" in self.columns:
            out["token_type_ids"] = [e.type_ids for e in encodings]
        return out

    def counts(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._whole.encode_batch(texts)]


class TransformersTokenizer:
    """The same interface over transformers' AutoTokenizer (an export without tokenizer.json). Such a tokenizer keeps
    its truncation setting in shared state: one call at a time."""

    def __init__(self, folder: str | Path, max_length: int) -> None:
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self._max_length = max_length
        self._lock = threading.Lock()

    def __call__(self, a: list[str], b: list[str] | None = None) -> Features:
        with self._lock:
            enc = self._tokenizer(a, b, truncation=True, max_length=self._max_length)
        return {k: enc[k] for k in COLUMNS if k in enc}

    def counts(self, texts: list[str]) -> list[int]:
        with self._lock:
            return [len(ids) for ids in self._tokenizer(texts)["input_ids"]]


def open_tokenizer(folder: str | Path, max_length: int) -> RustTokenizer | TransformersTokenizer:
    """The export folder's tokenizer for serving: tokenizer.json directly where there is one."""
    if (Path(folder) / "tokenizer.json").is_file():
        return RustTokenizer(folder, max_length)
    return TransformersTokenizer(folder, max_length)

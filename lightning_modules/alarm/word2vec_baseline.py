"""The word2vec baseline of Wood et al. 2021 (Table 3, Fig. 4): Zech et al. 2018's report classifier.

Zech et al. (Radiology 287:570) represent a head-CT report by the mean of its word2vec vectors and by
a bag of 1-3 word n-grams, and classify it with logistic regression; Wood et al. pre-train word2vec on
the 121,556 reports without reference labels and compare on the same test sets as ALARM (DeLong).

Here it is a LightningModule so that it runs under the very same DataModule, splits, evaluator,
metrics.json and predictions files as ALARM (``experiment=alarm_baseline_word2vec``). There is nothing
to optimise by gradient: the fit happens once in :meth:`on_fit_start` (gensim word2vec, then one
scikit-learn logistic regression per label on the training split's known labels), the training
"epoch" is a no-op, validation logs ``val/loss`` (binary cross-entropy) and ``val/auroc`` like ALARM,
and the fitted models travel inside the Lightning checkpoint.

Choices where the papers are silent (all options in ``configs/model/word2vec_baseline.yaml``):
word tokens as :func:`reportsup.analysis.corpus_stats.tokenize` (lower-cased); word2vec skip-gram, 300
dimensions, window 5, min count 1 on small corpora; n-grams as binary TF-IDF features (min df 2);
the two feature blocks concatenated, the mean vector standardised; L2 logistic regression, C = 1.
The word2vec corpus is the DataModule's unlabelled reports (``data.unlabelled_path``) plus the
training split, or the training split alone when there are none (said in the log).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from scipy import sparse
from torchmetrics.functional.classification import binary_auroc

from lightning_modules.common.checkpoints import UnsafeCheckpointError, load_checkpoint
from lightning_modules.common.label_manifest import build_manifest, check_manifest
from reportsup.analysis.corpus_stats import tokenize

CHECKPOINT_KEY = "word2vec_baseline"
# gensim reports every word2vec epoch at INFO; a run log needs only warnings from it.
logging.getLogger("gensim").setLevel(logging.WARNING)


class Word2VecFeatures:
    """Mean word2vec vector (standardised) next to a 1-3-gram TF-IDF bag of words (Zech et al. 2018)."""

    def __init__(
        self,
        vector_size: int = 300,
        window: int = 5,
        min_count: int = 1,
        sg: int = 1,
        epochs: int = 10,
        ngram_range: tuple[int, int] = (1, 3),
        ngram_min_df: int = 2,
        use_ngrams: bool = True,
        seed: int = 0,
    ) -> None:
        self.params = dict(vector_size=vector_size, window=window, min_count=min_count, sg=sg, epochs=epochs)
        self.ngram_range, self.ngram_min_df, self.use_ngrams, self.seed = (
            tuple(ngram_range),
            ngram_min_df,
            use_ngrams,
            seed,
        )

    def fit(self, corpus: Sequence[str], train_texts: Sequence[str]) -> Word2VecFeatures:
        from gensim.models import Word2Vec
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.preprocessing import StandardScaler

        # workers=1 + seed: gensim is deterministic only single-threaded.
        self.word2vec = Word2Vec([tokenize(t) for t in corpus], workers=1, seed=self.seed, **self.params).wv
        self.scaler = StandardScaler().fit(self.mean_vectors(train_texts))
        self.ngrams = None
        if self.use_ngrams:
            self.ngrams = TfidfVectorizer(
                tokenizer=tokenize,
                token_pattern=None,
                lowercase=False,
                ngram_range=self.ngram_range,
                min_df=self.ngram_min_df,
                binary=True,
            ).fit(train_texts)
        return self

    def mean_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """The report representation of Fig. 4 (right): mean of the known words' vectors (0 if none)."""
        out = np.zeros((len(texts), self.word2vec.vector_size), dtype=np.float32)
        for i, text in enumerate(texts):
            words = [w for w in tokenize(text) if w in self.word2vec.key_to_index]
            if words:
                out[i] = self.word2vec[words].mean(axis=0)
        return out

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        dense = sparse.csr_matrix(self.scaler.transform(self.mean_vectors(texts)))
        return sparse.hstack([dense, self.ngrams.transform(texts)]).tocsr() if self.ngrams else dense


class Word2VecBaseline(pl.LightningModule):
    """Zech et al.'s classifier as a LightningModule: one logistic regression per label.

    Args:
        labels: label names, in output order.
        features: keyword arguments of :class:`Word2VecFeatures`.
        C, l1_ratio, max_iter, class_weight: of ``sklearn.linear_model.LogisticRegression``
            (``l1_ratio`` 0 = L2, 1 = L1 penalty, solved by saga).
        threshold: decision threshold stored in the label manifest.
        seed: word2vec and solver seed.
    """

    TASK = "word2vec_baseline"

    def __init__(
        self,
        labels: Sequence[str],
        features: Mapping[str, Any] | None = None,
        C: float = 1.0,
        l1_ratio: float = 0.0,
        max_iter: int = 2000,
        class_weight: str | None = None,
        threshold: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.labels = list(labels)
        self.threshold = threshold
        self.automatic_optimization = False
        self.features: Word2VecFeatures | None = None
        self.classifiers: list[Any] = []

    # -- texts ride in the batches: no tensors to tokenise ------------------------------------
    @staticmethod
    def tokenize(texts: Sequence[str]) -> dict[str, list[str]]:
        """The DataModule's collate hook: the raw texts, unpadded (features are computed here)."""
        return {"text": list(texts)}

    # -- fitting --------------------------------------------------------------------------------
    def fit_baseline(
        self, train_texts: list[str], targets: np.ndarray, unlabelled: Sequence[str] = ()
    ) -> None:
        """word2vec on ``unlabelled`` + ``train_texts``, then one logistic regression per label."""
        from sklearn.linear_model import LogisticRegression

        if not unlabelled:
            rank_zero_info(
                "[reportsup] word2vec baseline: no unlabelled reports (data.unlabelled_path), word2vec is "
                f"trained on the {len(train_texts)} training reports only (the paper used the unlabelled archive)."
            )
        features = Word2VecFeatures(**(self.hparams.features or {}), seed=self.hparams.seed)
        features.fit([*unlabelled, *train_texts], train_texts)
        x = features.transform(train_texts)
        self.classifiers = []
        for j, label in enumerate(self.labels):
            known = ~np.isnan(targets[:, j])
            y = targets[known, j]
            if not np.isin(y, (0, 1)).all():
                raise ValueError(
                    f"word2vec baseline: label '{label}' has soft targets; logistic regression needs 0/1 "
                    "(use data.unknown_policy=mask/zeros/ones)."
                )
            clf = LogisticRegression(
                C=self.hparams.C,
                l1_ratio=self.hparams.l1_ratio,
                solver="saga" if self.hparams.l1_ratio > 0 else "lbfgs",
                max_iter=self.hparams.max_iter,
                class_weight=self.hparams.class_weight,
                random_state=self.hparams.seed,
            )
            self.classifiers.append(clf.fit(x[known], y.astype(int)))
        self.features = features

    def on_fit_start(self) -> None:
        if self.features is not None:  # resumed from a fitted checkpoint
            return
        dm = self.trainer.datamodule
        train = dm.datasets["train"]
        self.fit_baseline(list(train.texts), train.targets.numpy(), getattr(dm, "unlabelled_texts", []))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, n_labels)`` probabilities."""
        if self.features is None:
            raise RuntimeError("word2vec baseline: not fitted (train it, or load a fitted checkpoint).")
        x = self.features.transform(list(texts))
        return np.stack([clf.predict_proba(x)[:, 1] for clf in self.classifiers], axis=1)

    # -- Lightning steps ------------------------------------------------------------------------
    def configure_optimizers(self) -> None:
        return None  # closed-form fit in on_fit_start

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        return None

    def _probs(self, batch: dict[str, Any]) -> torch.Tensor:
        return torch.as_tensor(self.predict_proba(batch["text"]), dtype=torch.float32, device=self.device)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        probs, targets = self._probs(batch), batch["targets"]
        known = ~torch.isnan(targets)
        p = probs[known].clamp(1e-7, 1 - 1e-7)
        loss = torch.nn.functional.binary_cross_entropy(p, targets[known])
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(batch["index"]))
        self._val.append((probs.cpu(), targets.cpu()))

    def on_validation_epoch_start(self) -> None:
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        probs = torch.cat([p for p, _ in self._val])
        targets = torch.cat([t for _, t in self._val])
        values = []
        for j in range(len(self.labels)):
            known = ~torch.isnan(targets[:, j])
            y = targets[known, j].long()
            if 0 < int(y.sum()) < len(y):
                values.append(binary_auroc(probs[known, j], y))
        if values:
            self.log("val/auroc", torch.stack(values).mean(), prog_bar=True)

    def test_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        return {"index": batch["index"], "probs": self._probs(batch), "targets": batch["targets"]}

    # -- checkpoint ------------------------------------------------------------------------------
    def label_manifest(self) -> dict[str, Any]:
        return build_manifest(
            self.TASK,
            self.labels,
            {"name": "word2vec", **(self.hparams.features or {})},
            self.threshold,
            extra={"model_hparams": dict(self.hparams)},
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["label_manifest"] = self.label_manifest()
        checkpoint[CHECKPOINT_KEY] = pickle.dumps((self.features, self.classifiers))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_manifest(checkpoint.get("label_manifest"), self.label_manifest())
        if CHECKPOINT_KEY in checkpoint:
            self.features, self.classifiers = pickle.loads(checkpoint[CHECKPOINT_KEY])

    @classmethod
    def from_checkpoint(cls, path: str | Path, trust_checkpoint: bool = False) -> Word2VecBaseline:
        """A fitted baseline from its checkpoint. The file is read with ``torch.load(weights_only=True)``,
        but the fitted word2vec vectors and scikit-learn classifiers exist only as a pickle inside it:
        restoring them needs ``trust_checkpoint=True`` (only for checkpoints you trust, e.g. your own run)."""
        checkpoint = load_checkpoint(path, trust_checkpoint=trust_checkpoint)
        manifest = checkpoint.get("label_manifest") or {}
        check_manifest(manifest, {**manifest, "task": cls.TASK}, where=str(path))
        if CHECKPOINT_KEY in checkpoint and not trust_checkpoint:
            raise UnsafeCheckpointError(
                f"{path}: the word2vec baseline's fitted vectors and classifiers (gensim, scikit-learn) are "
                "stored pickled, and unpickling a file can run arbitrary code. If you trust this checkpoint "
                "(e.g. your own run), pass trust_checkpoint=True (reportsup-embeddings: --trust-checkpoint)."
            )
        model = cls(**checkpoint["hyper_parameters"])
        model.on_load_checkpoint(checkpoint)
        return model

import pytest
import torch

from lightning_modules.common.encoders import (
    EncoderUnavailableError,
    TextEncoder,
    minilm_encoder,
    pretrained_encoder,
)


def test_biobert_offline_fails_with_a_message_naming_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderUnavailableError) as err:
        pretrained_encoder(name="dmis-lab/biobert-v1.1")
    assert "encoder.path" in str(err.value) and "demo=true" in str(err.value)


def test_missing_local_encoder_path(tmp_path):
    with pytest.raises(EncoderUnavailableError, match="encoder.path="):
        pretrained_encoder(name="dmis-lab/biobert-v1.1", path=str(tmp_path / "nope"))


def test_minilm_loads_offline_and_round_trips_through_its_manifest():
    enc = minilm_encoder()
    assert enc.hidden_size == 384
    # from_pretrained hands the model over in eval mode; fine-tuning needs its dropout back
    assert all(m.training for m in enc.modules())
    spaced = minilm_encoder(line_breaks_to_spaces=True)
    assert spaced.preprocess("Lieve SCOLIOSI\nsinistro-convessa") == "lieve scoliosi sinistro-convessa"
    batch = enc.tokenize(["No acute infarct.", "Large mass."])
    assert enc(**batch).shape[:2] == batch["input_ids"].shape
    rebuilt = TextEncoder.from_manifest(enc.manifest())
    assert (
        rebuilt.tokenize(["No acute infarct."])["input_ids"].tolist()
        == enc.tokenize(["No acute infarct."])["input_ids"].tolist()
    )


def test_tiny_tokenizer_sees_only_the_training_texts(tmp_path):
    from lightning_modules.common.encoders import tiny_bert_encoder

    train = ["the ventricles are normal"] * 20
    enc = tiny_bert_encoder(
        train,
        vocab_size=200,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        save_dir=str(tmp_path / "tok"),
    )
    vocab = enc.tokenizer.get_vocab()
    assert "ventricles" in vocab and "glioblastoma" not in vocab
    # A second build in the same run (another DDP rank, a resume) reuses the saved tokenizer.
    again = tiny_bert_encoder(
        ["entirely different words"] * 20,
        vocab_size=200,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        save_dir=str(tmp_path / "tok"),
    )
    assert again.tokenizer.get_vocab() == vocab


def test_tiny_tokenizer_vocabulary_is_identical_across_processes():
    # tokenizers' own trainer broke ties in hash order: each process (each DDP rank) got another vocabulary.
    import subprocess
    import sys

    code = (
        "import hashlib, json; from datamodules.synthetic.datasets.mri_reports import generate_tables; "
        "from lightning_modules.common.encoders import train_wordpiece_tokenizer; "
        "t = train_wordpiece_tokenizer(generate_tables(300)['reports']['text'].tolist(), 500); "
        "print(hashlib.sha256(json.dumps(sorted(t.get_vocab().items())).encode()).hexdigest())"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(3)
    }
    assert len(digests) == 1


def test_encoder_path_without_a_model(tmp_path):
    with pytest.raises(EncoderUnavailableError, match="could not load encoder"):
        pretrained_encoder(name="dmis-lab/biobert-v1.1", path=str(tmp_path))


def test_encoder_dropout_option_sets_hidden_and_attention_dropout_and_rejects_bad_values():
    default, off = minilm_encoder(), minilm_encoder(dropout=0.0)
    assert default.model.config.hidden_dropout_prob == 0.1  # the pretrained config's
    assert off.model.config.hidden_dropout_prob == off.model.config.attention_probs_dropout_prob == 0.0
    assert off.model.training  # fine-tuning mode: dropout layers active when they have a rate
    ids = off.tokenize(["no acute intracranial haemorrhage"])
    torch.manual_seed(0)
    a, b = off(**ids), off(**ids)
    assert torch.equal(a, b)  # rate 0: train mode is deterministic
    with pytest.raises(ValueError, match="encoder.dropout=1.5"):
        minilm_encoder(dropout=1.5)


def test_token_ids_padded_per_batch_equal_tokenize():
    enc = minilm_encoder(max_length=16)
    texts = ["No acute infarct.", "Large mass in the LEFT frontal lobe with oedema " * 4, "x"]
    ids = enc.token_ids(texts)
    assert [len(i) for i in ids] == [
        len(i) for i in enc.tokenizer(texts, truncation=True, max_length=16)["input_ids"]
    ]
    assert max(len(i) for i in ids) == 16  # truncated as tokenize truncates
    padded, direct = enc.pad(ids), enc.tokenize(texts)
    assert set(padded) == set(direct)
    for key in direct:
        assert torch.equal(padded[key], direct[key]), key

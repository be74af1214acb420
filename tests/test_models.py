"""Model references, safe weight loading, students made of lower layers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import make_tiny_model_dir

from pipeline.errors import EgkdError
from pipeline.models import (
    ModelInfo,
    NewHead,
    base_model_of,
    check_label_order,
    load_classifier,
    load_tokenizer,
    load_trained_classifier,
    resolve,
    save_model,
    tokenizer_hash,
    weights_hash,
)


def test_builtin_model_resolves_to_the_packaged_files():
    location = resolve("builtin:minilm-l6")
    assert location.endswith("model")
    config = json.loads(open(f"{location}/config.json").read())
    assert config["num_hidden_layers"] == 6 and config["hidden_size"] == 384
    with pytest.raises(EgkdError, match="unknown builtin model 'builtin:gpt'"):
        resolve("builtin:gpt")


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(EgkdError, match="model directory not found"):
        resolve(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EgkdError, match="has no config.json"):
        resolve(str(tmp_path / "empty"))


def test_first_k_layers_keep_the_teachers_weights(tiny_model_dir):
    full = load_classifier(str(tiny_model_dir), 2)
    student = load_classifier(str(tiny_model_dir), 2, num_layers=1)
    assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    torch.testing.assert_close(student.bert.encoder.layer[0].state_dict(), full.bert.encoder.layer[0].state_dict())
    with pytest.raises(EgkdError, match="has 2 layers; cannot keep the first 3"):
        load_classifier(str(tiny_model_dir), 2, num_layers=3)


def test_pickle_weights_are_refused_unless_allowed(tiny_model_dir, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    state = load_classifier(str(tiny_model_dir), 2).state_dict()
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    with pytest.raises(EgkdError, match="only pickle weights .* --allow-pickle"):
        load_classifier(str(pickled), 2)
    model = load_classifier(str(pickled), 2, allow_pickle=True)
    torch.testing.assert_close(model.state_dict()["classifier.weight"], state["classifier.weight"])


def test_save_records_base_model_and_hashes_are_stable(tiny_model_dir, tmp_path):
    model = load_classifier(str(tiny_model_dir), 2)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    out = tmp_path / "saved"
    save_model(model, tokenizer, out, ModelInfo("teacher", "sst2", "base-ref", 2), ("0", "1"))
    assert base_model_of(str(out)) == "base-ref"
    assert base_model_of(str(tiny_model_dir)) == str(tiny_model_dir)
    assert weights_hash(str(out)) == weights_hash(str(out))
    assert tokenizer_hash(load_tokenizer(str(out))) == tokenizer_hash(tokenizer)
    assert tokenizer_hash(tokenizer) != tokenizer_hash(load_tokenizer("builtin:minilm-l6"))


def fake_hub_cache(root, repo_id: str, commit: str) -> None:
    """The local hub cache layout ``from_pretrained`` fills: a ``main`` ref naming a snapshot folder."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}", encoding="utf-8")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")


def test_hub_weights_hash_names_the_resolved_revision(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    fake_hub_cache(tmp_path, "org/tiny", "a" * 40)
    assert weights_hash("org/tiny") == f"hub:org/tiny@{'a' * 40}"
    fake_hub_cache(tmp_path, "org/tiny", "b" * 40)  # the hub model changed and the cache followed
    assert weights_hash("org/tiny") == f"hub:org/tiny@{'b' * 40}"


def test_hub_revision_from_the_hub_or_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(EgkdError, match="cannot tell the revision of org/absent: .* the hub is offline"):
        weights_hash("org/absent")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "model_info", lambda repo_id: SimpleNamespace(sha="c" * 40))
    assert weights_hash("org/absent") == f"hub:org/absent@{'c' * 40}"

    def unreachable(repo_id):
        raise OSError("network unreachable\nmore detail")

    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    with pytest.raises(EgkdError, match="the hub said: network unreachable$"):
        weights_hash("org/absent")


def test_a_checkpoint_without_a_classification_head_is_named(tmp_path):
    """builtin:minilm-l6 is a sentence-embedding model: as a teacher its head would be random."""
    with pytest.raises(EgkdError, match=r"teacher builtin:minilm-l6 .* classifier\.bias, classifier\.weight"):
        load_trained_classifier("builtin:minilm-l6", 2, NewHead(role="teacher"))
    encoder = make_tiny_model_dir(tmp_path / "encoder", head=False)
    first, new = load_trained_classifier(str(encoder), 2, NewHead(allow=True, seed=3))
    second, _ = load_trained_classifier(str(encoder), 2, NewHead(allow=True, seed=3))
    other, _ = load_trained_classifier(str(encoder), 2, NewHead(allow=True, seed=4))
    assert new == ("classifier.bias", "classifier.weight")
    torch.testing.assert_close(first.state_dict(), second.state_dict())
    assert not torch.equal(first.classifier.weight, other.classifier.weight)
    assert first.classifier.bias.abs().sum() == 0 and 0.01 < first.classifier.weight.std() < 0.03
    _, none = load_trained_classifier(str(make_tiny_model_dir(tmp_path / "trained")), 2, NewHead())
    assert none == ()


def named_labels(model: Path, names: list[str]) -> Path:
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = dict(enumerate(names))
    config["label2id"] = {name: i for i, name in enumerate(names)}
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return model


def test_a_model_whose_labels_are_the_data_s_in_another_order_is_refused(tmp_path):
    model = str(named_labels(make_tiny_model_dir(tmp_path / "m"), ["positive", "negative"]))
    with pytest.raises(EgkdError) as caught:
        check_label_order(model, ("negative", "positive"), "teacher")
    assert str(caught.value) == (
        f"teacher {model} outputs its labels in the order ['positive', 'negative'], the data's order is ['negative', "
        "'positive']: its predictions would be read as the wrong labels; give the teacher's order "
        '(data.label_names: ["positive", "negative"])'
    )
    with pytest.raises(EgkdError, match="the data's order is"):
        check_label_order(model, ("Negative", "Positive"), "model")  # names compared ignoring case
    check_label_order(model, ("positive", "negative"), "model")  # the same order
    check_label_order(model, ("0", "1"), "model")  # other names: nothing to compare
    check_label_order(model, None, "model")  # a regression task
    check_label_order(str(make_tiny_model_dir(tmp_path / "generic")), ("1", "0"), "model")  # LABEL_0, LABEL_1


def test_a_model_of_another_task_is_named_so_not_sent_to_a_new_head(tmp_path):
    model = str(named_labels(make_tiny_model_dir(tmp_path / "m"), ["negative", "positive"]))
    with pytest.raises(EgkdError) as caught:
        load_trained_classifier(model, 6, NewHead(role="model"))
    assert str(caught.value) == (
        f"model {model} was trained for 2 labels (negative, positive), the data has 6: it is a model of another "
        "task; give it its own task's data, or fine-tune a model on this one (egkd finetune)"
    )


def test_damaged_weights_and_missing_vocabulary_files_are_named(tmp_path):
    damaged = make_tiny_model_dir(tmp_path / "damaged")
    (damaged / "model.safetensors").write_bytes((damaged / "model.safetensors").read_bytes()[:50])
    with pytest.raises(EgkdError, match=f"could not load model weights from {damaged}: .*header"):
        load_classifier(str(damaged), 2)
    # without its vocabulary files transformers falls back to a tokenizer of special tokens alone
    source = Path(resolve("builtin:minilm-l6"))
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, bare / name)
    with pytest.raises(EgkdError) as caught:
        load_tokenizer(str(bare))
    assert str(caught.value).startswith(f"the tokenizer of {bare} has ")
    assert str(caught.value).endswith(
        "tokens for a model of 30522: its vocabulary files are missing (tokenizer.json, vocab.txt...); copy them "
        "from the model it was trained from"
    )

"""params.yaml: strict loading, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from pipeline.config import (
    Check,
    DistillParams,
    Params,
    TrainParams,
    VariantOptions,
    VariantParams,
    apply_options,
    help_of,
    load_params,
    option_keys,
    override,
)
from pipeline.errors import EgkdError
from pipeline.methods import Method
from pipeline.profiles import changed_keys, render

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_repository_params_load():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)


def test_values_and_nested_sections(tmp_path):
    params = load_params(
        write(
            tmp_path,
            "data:\n  train_limit: 100\nexplain:\n  gradient:\n    ig_steps: 7\nfinetune:\n  train:\n    lr: 2e-4\n",
        )
    )
    assert params.data.train_limit == 100
    assert params.explain.gradient.ig_steps == 7
    assert params.finetune.train.lr == pytest.approx(2e-4) and params.finetune.train.epochs == 1
    assert params.distill == Params().distill


@pytest.mark.parametrize(
    "text, message",
    [
        ("data:\n  trian_limit: 5\n", "unknown params key 'data.trian_limit'"),
        ("nonsense: 1\n", "unknown params key 'nonsense'"),
        ("data:\n  max_length: long\n", "params key 'data.max_length' must be an integer, got 'long'"),
        ("distill:\n  t2_scaling: 3\n", "params key 'distill.t2_scaling' must be true or false"),
        ("distill:\n  method: magic\n", "params key 'distill.method' must be one of"),
        ("distill:\n  train:\n    batch_size: 0\n", "distill.train.batch_size must be positive, got 0"),
        ("distill:\n  lr: 0.1\n", "unknown params key 'distill.lr'"),
        (
            "explain:\n  method: lime\n",
            "params key 'explain.method' must be one of ['gradient', 'perturbation', 'feature_selection'], got 'lime'",
        ),
        (
            "experiment:\n  methods: [gradient]\n  variants: {p: {cache: perturbation, options: {method: none}}}\n",
            "trains from the perturbation cache, which experiment.methods does not build",
        ),
        (
            "experiment:\n  methods: [gradient]\n  variants: {g: {cache: gradient, "
            "options: {method: gradient, view_method: perturbation}}}\n",
            "variant 'g' takes the perturbation family's views, which experiment.methods does not build",
        ),
        (
            "explain:\n  feature_selection:\n    k_fraction: 1.5\n",
            "explain.feature_selection.k_fraction must be between 0 and 1",
        ),
        ("data: [1, 2]\n", "params key 'data' must be a mapping"),
        ("data: {\n", "not valid YAML"),
    ],
)
def test_bad_params_name_the_key(tmp_path, text, message):
    with pytest.raises(EgkdError, match=re.escape(message)):
        load_params(write(tmp_path, text))


def test_override_wins_and_is_validated():
    params = Params()
    assert override(params.distill, alpha=0.9, beta=None).alpha == 0.9
    assert override(params.distill, method="none").method == "none"
    assert override(params.distill, method="perturbation").method is Method.PERTURBATION
    with pytest.raises(EgkdError, match="epochs must be positive"):
        override(params.distill.train, epochs=-1)
    with pytest.raises(EgkdError, match="option 'lr' must be a number, got 'fast'"):
        override(params.distill.train, lr="fast")
    with pytest.raises(EgkdError, match="option 'method' must be one of"):
        override(params.explain, method="none")


def test_every_numeric_field_declares_its_check():
    """Sizes, rates and fractions carry their constraint in the field itself (TrainParams as an example)."""
    checks = {f.name: f.metadata.get("check") for f in dataclasses.fields(TrainParams)}
    assert checks == {
        "epochs": Check.POSITIVE,
        "batch_size": Check.POSITIVE,
        "lr": Check.POSITIVE,
        "weight_decay": Check.NON_NEGATIVE,
        "warmup_ratio": Check.FRACTION,
        "seed": None,
        "min_steps": Check.NON_NEGATIVE,
    }


def test_the_view_and_adkd_keys_load_and_are_checked(tmp_path):
    params = load_params(
        write(
            tmp_path,
            "explain:\n  views:\n    count: 6\n    fraction: 0.3\n"
            "distill:\n  views: 2\n  view_weight: 0.5\n  view_kind: contrastive\n  gradient_loss: adkd\n"
            "  explain_every: 6\n  train:\n    min_steps: 300\n",
        )
    )
    assert (params.explain.views.count, params.explain.views.fraction) == (6, 0.3)
    d = params.distill
    assert (d.views, d.view_weight, d.view_kind, d.gradient_loss, d.train.min_steps) == (
        2,
        0.5,
        "contrastive",
        "adkd",
        300,
    )
    assert d.explain_every == 6
    assert d.train.epochs == Params().distill.train.epochs  # a nested key keeps the section's other defaults
    for text, message in [
        ("distill:\n  view_kind: salient\n", "params key 'distill.view_kind' must be one of"),
        ("distill:\n  gradient_loss: l1\n", "'distill.gradient_loss' must be one of ['cosine', 'adkd']"),
        ("distill:\n  views: -1\n", "distill.views must not be negative, got -1"),
        ("distill:\n  explain_every: 0\n", "distill.explain_every must be positive, got 0"),
        ("explain:\n  views:\n    fraction: 2\n", "explain.views.fraction must be between 0 and 1"),
    ]:
        with pytest.raises(EgkdError, match=re.escape(message)):
            load_params(write(tmp_path, text))
    variant = "v: {cache: gradient, options: {method: gradient, views: 2, view_kind: random, gradient_loss: adkd}}"
    occlusion = "o: {cache: perturbation, options: {method: perturbation, explain_every: 2, t2_scaling: false}}"
    text = f"experiment:\n  methods: [gradient, perturbation]\n  variants: {{{variant}, {occlusion}}}\n"
    options, other = (v.options for v in load_params(write(tmp_path, text)).experiment.variants)
    assert options.values == (
        ("method", Method.GRADIENT),
        ("views", 2),
        ("view_kind", "random"),
        ("gradient_loss", "adkd"),
    )
    assert (other.get("explain_every"), other.get("t2_scaling"), other.get("beta")) == (2, False, None)
    chosen = options.apply(DistillParams(beta=0.3))
    assert (chosen.views, chosen.view_kind, chosen.gradient_loss, chosen.beta) == (2, "random", "adkd", 0.3)


def test_variant_family_is_its_objective_or_the_cache_whose_views_it_trains_on():
    section = DistillParams(views=1, view_kind="preserving")

    def family(cache, distill=section, **options):
        return VariantParams("v", Method(cache), VariantOptions.parse(options, "options")).family(distill)

    assert family("gradient", method="gradient", views=0) is Method.GRADIENT
    assert family("perturbation", method="none", view_kind="contrastive") is Method.PERTURBATION
    assert family("feature_selection", method="none") is Method.FEATURE_SELECTION  # the section's views
    assert family("gradient", method="none", view_kind="random") is None  # KD on random views
    assert family("gradient", method="none", views=0) is None  # vanilla KD, fine-tuning
    assert family("gradient", DistillParams(views=0), method="none") is None
    assert family("gradient", DistillParams(views=1, view_kind="random"), method="none") is None
    # another family's views: KD on them is guided by that family; an objective stays its own family
    occl = Method.PERTURBATION
    assert family("gradient", method="none", view_kind="contrastive", view_method="perturbation") is occl
    assert family("gradient", method="gradient", view_method="perturbation") is Method.GRADIENT
    assert family("gradient", method="none", view_kind="random", view_method="perturbation") is None


def test_min_steps_adds_whole_epochs():
    train = TrainParams(epochs=3, min_steps=300)
    assert train.epochs_for(63) == 5  # 500 sentences at batch 8: 3 epochs are 189 steps, 5 are 315
    assert train.epochs_for(558) == 3  # a larger set reaches it within its epochs
    assert TrainParams(epochs=2, min_steps=0).epochs_for(10) == 2


def test_missing_params_file_other_than_default(tmp_path):
    with pytest.raises(EgkdError, match="params file not found"):
        load_params(tmp_path / "other.yaml")


def test_the_packaged_defaults_are_the_repositorys_params_yaml():
    """One source for every default: params.yaml is what `egkd profile` writes for the dataclasses' defaults, and
    loads back to exactly them (a new default that differs fails here)."""
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    assert load_params(REPO / "params.yaml") == Params()
    assert text == render(Params()), "params.yaml is stale: run `egkd profile` and commit it"


@pytest.mark.parametrize("profile", sorted(p.stem for p in (REPO / "profiles").glob("*.yaml")))
def test_a_profile_lists_only_the_keys_it_changes(profile):
    path = REPO / "profiles" / f"{profile}.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    listed = sorted(_leaf_keys(raw))
    changed = changed_keys(load_params(path))
    # a listed key equal to its default would hide a later change of the default from this profile; the variants
    # and the evaluation sets are mappings a profile gives whole
    whole = ("experiment.variants", "experiment.eval_sets")
    assert sorted(k for k in listed if not k.startswith(whole)) == sorted(k for k in changed if k not in whole)
    assert render(load_params(path), profile, path).count("\n") > 150  # the whole params.yaml


def _leaf_keys(raw: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in raw.items():
        if isinstance(value, dict):
            keys += _leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def test_option_keys_flatten_the_train_section_and_apply_checks_like_params():
    keys = option_keys(DistillParams)
    assert keys["lr"] == ("train", "lr") and keys["beta"] == ("beta",)
    assert set(keys) == {f.name for f in dataclasses.fields(DistillParams) if f.name != "train"} | {
        f.name for f in dataclasses.fields(TrainParams)
    }
    chosen = apply_options(Params().distill, {"lr": 3e-4, "beta": 0.2})
    assert (chosen.train.lr, chosen.beta, chosen.train.epochs) == (3e-4, 0.2, 3)
    with pytest.raises(EgkdError, match="option 'view_kind' must be one of"):
        apply_options(Params().distill, {"view_kind": "salient"})
    with pytest.raises(EgkdError, match="epochs must be positive, got 0"):
        apply_options(Params().distill, {"epochs": 0})


def test_every_distill_setting_declares_its_help():
    for section in (DistillParams, TrainParams):
        assert all(help_of(f) for f in dataclasses.fields(section) if f.name != "train"), section.__name__

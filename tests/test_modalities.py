"""Modalities are first-class objects: a registry of complete packages, and no modality string compared
anywhere else (an unknown modality is an error, never the image path by default)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import genloop
from genloop.errors import ConfigError, NotFoundError
from genloop.modalities import REQUIRED_MODULES, Modality, modalities
from genloop.resolve import _data_config_cls
from genloop.systems import ModelRegistry, System, models

SRC = Path(genloop.__file__).parent
PACKAGES = SRC / "modalities"
# the names a modality has been called by, registered or not (music is being built beside them)
MODALITY_NAMES = {"image", "text", "music", *modalities.names()}


def _mentions_modality(node: ast.AST) -> bool:
    return "modality" in ast.unparse(node).lower()


def _names_in(node: ast.AST) -> set[str]:
    """The modality names a node is, or holds (a tuple/list/set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value} & MODALITY_NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return set().union(*(_names_in(e) for e in node.elts)) if node.elts else set()
    return set()


def modality_string_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """Comparisons of something modality-like with a modality name (``==``, ``!=``, ``in (...)``), and
    ``getattr(x, "modality", "<name>")`` — a silent default."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            named = [o for o in operands if _names_in(o)]
            if named and any(_mentions_modality(o) for o in operands if o not in named):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            args = node.args
            if (
                len(args) == 3
                and isinstance(args[1], ast.Constant)
                and "modality" in str(args[1].value)
                and _names_in(args[2])
            ):
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_checker_catches_the_ways_code_compared_modalities() -> None:
    bad = """
if system.modality == "text": pass
if getattr(pipe, "modality", "image") != "text": pass
x = IMAGE if row.modality == "image" else TEXT
if modality not in (None, "image", "text"): pass
if api.modality(run_id) == "text": pass
y = "FID" if r["modality"] == "image" else "chars"
if "music" == cls.modality: pass
"""
    assert {line for line, _ in modality_string_uses(ast.parse(bad))} == set(range(2, 9))  # every line
    fine = """
if kind == "image": pass  # an upload's kind, not a modality
if e.type == "text": pass
if m != reward.modality: pass  # two modalities compared with each other
declared = getattr(cls, "modality", None)
x = modalities[row.modality].generate_keys
"""
    assert modality_string_uses(ast.parse(fine)) == []


def test_no_module_outside_the_modality_packages_compares_a_modality_string() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("modalities/") or rel == "registry.py":
            continue
        for line, code in modality_string_uses(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{rel}:{line}: {code}")
    assert not offenders, "ask genloop.modalities instead:\n" + "\n".join(offenders)


@pytest.mark.parametrize("name", modalities.names())
def test_every_registered_modality_is_a_complete_package(name: str) -> None:
    m = modalities[name]
    assert isinstance(m, Modality) and m.name == name
    assert not inspect.isabstract(type(m)), f"{name} leaves {sorted(type(m).__abstractmethods__)} unimplemented"
    for attr in ("name", "noun", "default_eval_n", "probe_label", "prompted", "generate_keys", "report_keys"):
        assert hasattr(m, attr), f"modality {name} does not set {attr}"
    package = PACKAGES / name
    missing = [f for f in REQUIRED_MODULES if not (package / f).is_file()]
    assert not missing, f"genloop/modalities/{name}/ lacks {missing}"
    assert type(m).__module__ == f"genloop.modalities.{name}.modality"
    assert isinstance(m.data_config_cls, type)


def test_every_modality_package_with_a_modality_module_is_registered() -> None:
    packages = {p.parent.name for p in PACKAGES.glob("*/modality.py")}
    assert packages <= set(modalities.names()), f"not registered in genloop/modalities/__init__.py: {packages}"
    for name in packages:
        module = importlib.import_module(f"genloop.modalities.{name}.modality")
        assert any(isinstance(v, type) and issubclass(v, Modality) and v is not Modality for v in vars(module).values())


def test_a_modality_missing_a_piece_cannot_be_built() -> None:
    class Half(Modality):
        name = "half"
        noun = "half"

    with pytest.raises(TypeError, match="abstract"):
        Half()  # type: ignore[abstract]


def test_an_unknown_modality_is_an_error_naming_the_valid_ones() -> None:
    with pytest.raises(NotFoundError) as e:
        modalities["sculpture"]
    assert "sculpture" in str(e.value)
    assert all(name in str(e.value) for name in modalities.names())


def test_every_registered_family_declares_a_registered_modality() -> None:
    for name in models.names():
        assert models[name].modality in modalities, name


def test_a_family_with_an_unregistered_or_missing_modality_fails_at_registration() -> None:
    class Sculptor(System):
        modality = "sculpture"

    class Silent(System):
        pass

    registry = ModelRegistry("model")
    with pytest.raises(NotFoundError, match="sculptor.*unknown modality 'sculpture'; valid: image"):
        registry.register("sculptor", Sculptor)
    with pytest.raises(ConfigError, match="declares no modality"):
        registry.register("silent", Silent)
    assert "sculptor" not in registry and "silent" not in registry
    with pytest.raises(NotFoundError, match="unknown modality 'sculpture'"):
        _data_config_cls(Sculptor)  # and at use: its recipe cannot be resolved down the image path


STATIC = SRC / "server" / "static"
JS_MODALITY_COMPARISON = re.compile(
    r"""modality\s*[!=]==?\s*["'`]|["'`]\s*[!=]==?\s*[\w.?\[\]"']*modality|\.includes\([^)]*modality""", re.I
)


def test_the_studio_page_compares_no_modality_string() -> None:
    """The page picks a model's form from its descriptor's ``controls``; a ``modality === "image"`` fallback
    once sent every descriptor without controls down the image path."""
    assert JS_MODALITY_COMPARISON.search('if (m.modality === "image") {}')
    assert JS_MODALITY_COMPARISON.search("x = 'text' !== m.modality")
    modules = sorted(STATIC.glob("*.js"))
    assert {"app.js", "edit.js", "runs.js", "gallery.js", "datasets.js"} <= {m.name for m in modules}
    offenders = [
        f"{m.name}:{i}: {line.strip()}"
        for m in modules  # every module of the page: a tab of its own is no exception
        for i, line in enumerate(m.read_text(encoding="utf-8").splitlines(), 1)
        if JS_MODALITY_COMPARISON.search(line)
    ]
    assert not offenders, "use the descriptor's controls:\n" + "\n".join(offenders)


@pytest.mark.parametrize("name", modalities.names())
def test_every_modality_descriptor_names_the_controls_the_page_shows(name: str) -> None:
    family = next(f for f in models.names() if models[f].modality == name)
    config = {"model": {"name": family}, "data_spec": {}}
    controls = modalities[name].describe(config, models[family])["controls"]
    if isinstance(controls, list):
        assert controls and all({"name", "type"} <= set(c) for c in controls)
    else:
        html, js = ((STATIC / f).read_text(encoding="utf-8") for f in ("index.html", "app.js"))
        assert f'id="{controls}"' in html and f'"{controls}"' in js.split("BUILT_IN_FORMS = [", 1)[1].split("]")[0]


def test_image_generate_keys_follow_the_family() -> None:
    """A text-to-image family takes a prompt and no class, every other image family the reverse: the server's
    check of a generate job and of a preset asks the modality with the run's family (a ``prompt`` for a VAE was
    accepted once the image modality's keys listed it for text to image)."""
    image = modalities["image"]
    text_to_image = image.generate_keys_of(models["ddpm-text"])
    plain = image.generate_keys_of(models["ddpm"])
    assert "prompt" in text_to_image and "class_label" not in text_to_image
    assert "class_label" in plain and "prompt" not in plain
    assert set(text_to_image) | set(plain) == set(image.generate_keys)
    assert modalities["text"].generate_keys_of(models["gpt"]) == modalities["text"].generate_keys

"""The image modality: what an image model's data, outputs, evaluation, feedback and studio controls are.

The image data code stays in :mod:`genloop.data` (built-in sets, folders, the prepared-tensor cache) and the
evaluation in :mod:`genloop.evaluation`; this class is where the rest of GenLoop reaches them from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..base import BUILTIN_CLAIM, Modality


class ImageModality(Modality):
    can_shard = True  # sample i is drawn in the same batch on any number of processes (generation/sharding.py)
    can_score_watermarked = True  # eval --watermarked: the samples marked first (safety/image_watermark.py)
    name = "image"
    noun = "image"
    prompted = False
    default_eval_n = 2000
    probe_label = "FID"
    # the settings the report shows only for image runs (a quick eval's FID samples, the image data's shape)
    own_settings = ("train.eval_samples", "data_spec.channels", "data_spec.image_size", "data_spec.num_classes")
    generate_keys = ("class_label", "prompt", "sampler", "steps", "guidance", "eta")

    def generate_keys_of(self, system_cls: type) -> tuple[str, ...]:
        """A text-to-image family takes a prompt and no class; every other image family a class and no prompt."""
        drop = "class_label" if getattr(system_cls, "text_conditional", False) else "prompt"
        return tuple(k for k in self.generate_keys if k != drop)

    # --- data -----------------------------------------------------------------------------------
    @property
    def data_config_cls(self) -> type:
        from ...data import DataConfig

        return DataConfig

    default_family = "dcgan"

    def data_claim(self, name: str) -> int:
        from ...data import datasets
        from ...data.sources import source_files
        from ...errors import GenLoopError

        if name in datasets:
            return BUILTIN_CLAIM
        path = Path(name).expanduser()
        try:
            return len(source_files(path)) if path.exists() else 0
        except GenLoopError:
            return 0

    def data_warnings(self, dataset: Any, data_config: Any) -> list[str]:
        from ...evaluation.heldout import heldout_warning

        note = heldout_warning(dataset, data_config.split)
        return [note] if note else []

    def builtin_data(self) -> dict[str, str]:
        from ...data import datasets

        return {name: datasets[name].description for name in datasets}

    def data_summary(self, name: str) -> dict[str, Any] | None:
        from ...data.prepare import survey

        return survey(name)

    def load_data(self, rc: Any) -> Any:
        from ...data import load_dataset

        return load_dataset(rc.data)

    def load_run_data(self, run: Any) -> Any:
        """The dataset a run was trained on (for the FID of a simulation, a rater's reference)."""
        from ...config import from_dict
        from ...data import DataConfig, load_dataset

        return load_dataset(from_dict(DataConfig, run.config["data"], "data."))

    def data_spec(self, dataset: Any) -> Any:
        from ...systems.base import DataSpec

        return DataSpec(
            dataset.channels, dataset.image_size, dataset.num_classes, captioned=dataset.captions is not None
        )

    def batches(self, dataset: Any, rc: Any, system: Any) -> Any:
        from ...data import ImageBatches

        images, labels = dataset.get("train")
        # a text-to-image family trains on each image's caption, as byte tokens beside it in every batch
        tokens = system.tokenize(dataset.get_captions("train")) if system.text_conditional else None
        return ImageBatches(
            images,
            labels,
            rc.train.batch_size,
            seed=rc.train.seed,
            flip=rc.data.flip,
            shift=rc.data.shift,
            tokens=tokens,
        )

    def bind(self, system: Any, dataset: Any, folder: Path, *, new: bool) -> None:
        return None  # an image model is its weights

    def restore(self, system: Any, folder: Path) -> None:
        return None

    # --- generation -----------------------------------------------------------------------------
    def pipeline(self, system: Any, info: dict[str, Any]) -> Any:
        from ...generation.pipelines import DiffusionPipeline, ImagePipeline
        from ...generation.text_to_image import TextToImagePipeline

        if system.text_conditional:
            return TextToImagePipeline(system, info)
        cls = DiffusionPipeline if system.diffusion else ImagePipeline
        return cls(system, info)

    def items(self, output: Any) -> Any:
        return output.tensors

    def store_item(self, store: Any, row: Any, output: Any, index: int) -> Path | None:
        from ...data.image_io import save_png
        from ...feedback.store import _condition
        from ...safety import image_watermark, provenance

        recipe = output.recipe_of(index)
        rel = f"{row.id[:2]}/{row.id}.png"
        path = save_png(
            store.media_dir / rel,
            output.tensors[index],
            recipe,
            sign=provenance.enabled(),
            generation_id=row.id,
            watermark=image_watermark.enabled(),
        )
        row.media, row.prompt = rel, _condition(recipe)
        return Path(path)

    def item_ref(self, store: Any, row: Any) -> str:
        return str(store.image_path(row))

    def same_item(self, store: Any, a: Any, b: Any) -> bool:
        """The same pixels (the PNG files carry recipes that differ in their ids)."""
        import numpy as np
        from PIL import Image

        with Image.open(store.image_path(a)) as ia, Image.open(store.image_path(b)) as ib:
            return bool(np.array_equal(np.asarray(ia), np.asarray(ib)))

    def preview(self, system: Any, files: Any, step: int, generator: Any, **sizes: Any) -> Path:
        from ...generation.preview import image_preview

        return image_preview(system, files, step, generator, ema=sizes["ema"], n=sizes["images"])

    # --- evaluation -----------------------------------------------------------------------------
    def quick_evaluator(self, dataset: Any, cfg: Any, progress: bool) -> Callable[[Any], dict[str, float]]:
        """A small-sample FID/KID/precision/recall (and class accuracy for conditional models) of the
        current EMA weights, on the reference net."""
        from ...evaluation import catalog, evaluate_images, get_feature_extractor
        from ...training.engine import pick_device

        extractor = get_feature_extractor(dataset, device=pick_device(cfg.device), progress=progress)

        def quick(system: Any) -> dict[str, float]:
            out = self.pipeline(system, {"run_id": None, "model": system.config.name})(
                n=cfg.eval_samples, seed=2_000_000
            )
            r = evaluate_images(
                out.tensors, dataset, extractor, seed=0, labels=out.labels, metrics=("fid", "kid", "prdc", "class")
            )
            return {k: float(r[k]) for k in catalog.selectable() if k in r}

        return quick

    def evaluate(self, store: Any, run: Any, pipe: Any, n: int, seed: int, t0: float, **options: Any) -> dict:
        from ...evaluation.protocol import evaluate_image_run

        return evaluate_image_run(store, run, pipe, n, seed, t0, **options)

    def report_section(self, run_dir: Path, ev: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        from ...evaluation.report import _evaluation

        return "evaluation", _evaluation(ev, self.name)

    # --- feedback -------------------------------------------------------------------------------
    def reward_features(self, store: Any, rows: list[Any], runs_dir: str | Path | None) -> tuple[Any, dict]:
        from ...errors import ConfigError
        from ...feedback.reward import ImageFeatures
        from ...runs import RunStore

        runs = RunStore(runs_dir)
        data_cfgs = {}
        for rid in sorted({r.run_id for r in rows}):
            data_cfgs[rid] = runs.get(rid).config["data"]
        first = next(iter(data_cfgs.values()))
        key = ("name", "image_size", "channels")
        for rid, d in data_cfgs.items():
            if any(d.get(k) != first.get(k) for k in key):
                raise ConfigError(
                    f"the rated images come from runs on different data ({first.get('name')} and "
                    f"{d.get('name')} via run {rid}); train a reward model per dataset with --run"
                )
        feats = ImageFeatures(first)
        x = feats([store.image_path(r) for r in rows])
        return x, {
            "kind": "refnet",
            "data": feats.data,
            "extractor_id": feats.extractor.id,
            "extractor_sha256": feats.extractor.sha256,
        }

    def featurize(self, model: Any, items: Any) -> Any:
        return model._image_features(items)

    def rerank(self, output: Any, pick: Any) -> dict[str, Any]:
        return {"tensors": output.tensors[pick]}

    def item_summary(self, output: Any, index: int) -> str:
        recipe = output.recipe_of(index)
        if recipe.get("prompt") is not None:
            return f"prompt {recipe['prompt']!r}"
        label = recipe.get("class_label")
        return "" if label is None else f"class {label}"

    def simulation_options(self, text_options: dict[str, Any]) -> dict[str, Any]:
        return {}

    def quality_probe(self, dataset: Any, seed: int) -> Callable[[Any], dict[str, Any]]:
        from ...evaluation import evaluate_images, get_feature_extractor

        extractor = get_feature_extractor(dataset)

        def measure(items: Any) -> dict[str, Any]:
            fid = evaluate_images(items, dataset, extractor, seed=seed, metrics=("fid",))
            return {"fid": round(float(fid["fid"]), 3), "fid_floor": round(float(fid["fid_floor"]), 3)}

        return measure

    def finetune(self, run_id: str, reward: Any, store: Any, job: str, cfgs: dict[str, Any], runs_dir: Any) -> dict:
        """Reward-weighted fine-tuning of the image model."""
        from ...feedback.optimize import finetune_images

        return finetune_images(run_id, reward, cfgs.get("finetune"), runs_dir=runs_dir)

    # --- studio ---------------------------------------------------------------------------------
    def describe(self, config: dict[str, Any], system_cls: type) -> dict[str, Any]:
        spec = config.get("data_spec") or {}
        conditional = bool(
            getattr(system_cls, "conditional", False) is True or config["model"].get("class_conditional")
        )
        d: dict[str, Any] = {
            "conditional": conditional,
            "num_classes": spec.get("num_classes") if conditional else None,
            "diffusion": bool(getattr(system_cls, "diffusion", False)),
            # the studio's own image fieldset (class grid, sampler, guidance): the page shows the form a
            # descriptor names and never guesses one from the modality's name
            "controls": "image-controls",
            # a text-to-image family: the image fieldset gets a prompt box (and guidance applies to the prompt)
            "prompt": bool(getattr(system_cls, "text_conditional", False)),
        }
        if d["prompt"]:
            d["default_guidance"] = config["model"].get("guidance")
            d["max_prompt_bytes"] = config["model"].get("max_caption_bytes")
        if d["diffusion"]:
            d["samplers"] = ["ddpm", "ddim", "dpmpp-2m"]
            d["default_sampler"] = config["model"].get("sampler")
            d["default_steps"] = config["model"].get("sampling_steps")
            # what the studio's Edit tab offers: the editing tasks (a diffusion run is the prior of every one)
            from ...generation.editing.tasks import describe_tasks

            d["edit_tasks"] = describe_tasks(spec.get("channels"))
        if spec.get("image_size"):
            d["image_size"], d["channels"] = spec["image_size"], spec.get("channels")
        return d

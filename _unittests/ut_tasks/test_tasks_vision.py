"""
Tasks summarization, object-detection, zero-shot-image-classification, mask-generation:
reduced configurations build small models, the inputs run the eager model on both sets
and one architecture per task exports with torch.export.
"""

import copy
import unittest

import torch
import transformers

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.tasks import (
    TaskInputError,
    check_inputs2,
    get_task_module,
    random_input_kwargs,
    reduce_model_config,
)
from onnx_diagnostic.tasks._reduce import merge_overrides
from onnx_diagnostic.torch_export_patches import torch_export_patches
from onnx_diagnostic.torch_export_patches.patch_inputs import use_dyn_not_str
from onnx_diagnostic.torch_models.hghub.hub_api import config_from_dict


def _reduced(model_type: str, task: str, **kwargs):
    """The default configuration of ``model_type`` reduced for ``task``."""
    d = transformers.CONFIG_MAPPING[model_type](**kwargs).to_dict()
    return config_from_dict(merge_overrides(d, reduce_model_config(d, task)))


class _TaskCase(ExtTestCase):
    def _inputs(self, task, config, model, **kwargs):
        defaults, fct = random_input_kwargs(config, task)
        defaults.update(kwargs)
        res = fct(model, config, add_second_input=True, **defaults)
        self.assertEqual(check_inputs2(res["inputs"], res["inputs2"], res["dynamic_shapes"]), [])
        return res

    def _run(self, task, config, cls, **kwargs):
        torch.manual_seed(0)
        model = cls(config).eval()
        res = self._inputs(task, config, model, **kwargs)
        with torch.no_grad():
            for name in ("inputs", "inputs2"):
                model(**copy.deepcopy(res[name]))
        return model, res

    def _export(self, model, res):
        with torch_export_patches(patch_transformers=True):
            ep = torch.export.export(
                model,
                (),
                kwargs=copy.deepcopy(res["inputs"]),
                dynamic_shapes=use_dyn_not_str(res["dynamic_shapes"]),
                strict=False,
            )
        with torch.no_grad():
            expected = model(**copy.deepcopy(res["inputs2"]))
            got = ep.module()(**copy.deepcopy(res["inputs2"]))
        return expected, got


class TestSummarization(_TaskCase):
    def test_delegates_to_text2text_generation(self):
        mod, base = get_task_module("summarization"), get_task_module("text2text-generation")
        self.assertEqual(mod.__TASK__, "summarization")
        self.assertIs(mod.get_inputs, base.get_inputs)
        self.assertIs(mod.reduce_model_config, base.reduce_model_config)

    def test_bart_and_pegasus_run(self):
        for model_type, cls in [
            ("bart", transformers.BartForConditionalGeneration),
            ("pegasus", transformers.PegasusForConditionalGeneration),
        ]:
            with self.subTest(model_type=model_type):
                config = _reduced(model_type, "summarization")
                self.assertEqual(config.d_model, 64)
                self._run("summarization", config, cls)

    def test_t5_exports(self):
        config = _reduced("t5", "summarization", vocab_size=100)
        model, res = self._run("summarization", config, transformers.T5ForConditionalGeneration)
        expected, got = self._export(model, res)
        self.assertEqualArray(expected.logits, got.logits, atol=1e-4)

    def test_bad_config(self):
        with self.assertRaises(TaskInputError) as cm:
            random_input_kwargs({"d_model": 32, "num_layers": 1, "num_heads": 2}, "summarization")
        self.assertIn("vocab_size", str(cm.exception))


class TestObjectDetection(_TaskCase):
    def test_reduce_replaces_a_timm_backbone(self):
        over = reduce_model_config(
            {
                "model_type": "detr",
                "use_timm_backbone": True,
                "use_pretrained_backbone": True,
                "backbone": "resnet50",
                "num_queries": 100,
            },
            "object-detection",
        )
        self.assertEqual(over["backbone_config"]["model_type"], "resnet")
        self.assertEqual(over["backbone_config"]["out_features"], ["stage4"])
        self.assertEqual((over["use_timm_backbone"], over["backbone"]), (False, None))
        over = reduce_model_config(
            {"model_type": "deformable_detr", "use_timm_backbone": True, "num_feature_levels": 4},
            "object-detection",
        )
        self.assertEqual(over["backbone_config"]["out_features"], ["stage2", "stage3", "stage4"])

    def test_detr_family_runs_with_dynamic_images(self):
        for model_type, cls in [
            ("conditional_detr", transformers.ConditionalDetrForObjectDetection),
            ("rt_detr", transformers.RTDetrForObjectDetection),
        ]:
            with self.subTest(model_type=model_type):
                config = _reduced(model_type, "object-detection")
                _, res = self._run("object-detection", config, cls, height=64, width=64)
                self.assertEqual(
                    res["dynamic_shapes"]["pixel_mask"], {0: "batch", 1: "height", 2: "width"}
                )
                self.assertEqual(tuple(res["inputs2"]["pixel_values"].shape), (3, 3, 96, 96))

    def test_detr_exports(self):
        config = _reduced("detr", "object-detection")
        model, res = self._run(
            "object-detection", config, transformers.DetrForObjectDetection, height=64, width=64
        )
        expected, got = self._export(model, res)
        self.assertEqualArray(expected.pred_boxes, got.pred_boxes, atol=1e-4)

    def test_yolos_static_image_without_mask(self):
        config = _reduced("yolos", "object-detection")
        self.assertEqual(config.image_size, [32, 48])
        _, res = self._run("object-detection", config, transformers.YolosForObjectDetection)
        self.assertEqual(res["dynamic_shapes"], {"pixel_values": {0: "batch"}})
        self.assertEqual(tuple(res["inputs2"]["pixel_values"].shape), (3, 3, 32, 48))

    def test_bad_input(self):
        fct = get_task_module("object-detection").get_inputs
        with self.assertRaises(TaskInputError) as cm:
            fct(None, None)
        self.assertIn("height", str(cm.exception))
        with self.assertRaises(TaskInputError) as cm:
            fct(None, transformers.YolosConfig(), height=0)
        self.assertIn("height must be >= 1", str(cm.exception))
        with self.assertRaises(TaskInputError) as cm:
            random_input_kwargs(transformers.YolosConfig(image_size=[1, 2, 3]), "object-detection")
        self.assertIn("image_size", str(cm.exception))


def _clip_config():
    return transformers.CLIPConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=100,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
        ),
        projection_dim=16,
    )


class TestZeroShotImageClassification(_TaskCase):
    task = "zero-shot-image-classification"

    def test_reduced_models_run(self):
        for model_type, cls in [
            ("siglip", transformers.SiglipModel),
            ("chinese_clip", transformers.ChineseCLIPModel),
            ("blip", transformers.BlipModel),
        ]:
            with self.subTest(model_type=model_type):
                config = _reduced(model_type, self.task)
                self.assertEqual(config.vision_config.hidden_size, 64)
                _, res = self._run(self.task, config, cls)
                self.assertEqual(res["inputs2"]["input_ids"].shape, (3, 13))
                self.assertEqual(res["inputs2"]["pixel_values"].shape[0], 4)

    def test_clip_exports(self):
        config = _clip_config()
        model, res = self._run(self.task, config, transformers.CLIPModel)
        expected, got = self._export(model, res)
        self.assertEqual(got.logits_per_image.shape, (4, 3))
        self.assertEqualArray(expected.logits_per_image, got.logits_per_image, atol=1e-4)

    def test_bad_input(self):
        with self.assertRaises(TaskInputError) as cm:
            random_input_kwargs(transformers.BertConfig(), self.task)
        self.assertIn("vision_config", str(cm.exception))
        fct = get_task_module(self.task).get_inputs
        with self.assertRaises(TaskInputError) as cm:
            fct(None, _clip_config(), image_batch_size=0)
        self.assertIn("image_batch_size", str(cm.exception))
        with self.assertRaises(TaskInputError) as cm:
            random_input_kwargs(transformers.Siglip2Config(), self.task)
        self.assertIn("spatial_shapes", str(cm.exception))


class TestMaskGeneration(_TaskCase):
    task = "mask-generation"

    def test_reduced_models_run(self):
        for model_type, cls in [
            ("sam_hq", transformers.SamHQModel),
            ("sam2", transformers.Sam2Model),
        ]:
            with self.subTest(model_type=model_type):
                config = _reduced(model_type, self.task)
                _, res = self._run(self.task, config, cls)
                self.assertEqual(tuple(res["inputs2"]["input_points"].shape), (3, 3, 4, 2))

    def test_sam_exports_points_and_runs_boxes(self):
        config = _reduced("sam", self.task)
        self.assertEqual(config.vision_config.image_size, 64)
        model, res = self._run(self.task, config, transformers.SamModel)
        expected, got = self._export(model, res)
        self.assertEqualArray(expected.pred_masks, got.pred_masks, atol=1e-4)
        _, res = self._run(self.task, config, transformers.SamModel, prompt="boxes")
        self.assertEqual(sorted(res["inputs"]), ["input_boxes", "pixel_values"])

    def test_bad_input(self):
        with self.assertRaises(TaskInputError) as cm:
            random_input_kwargs(transformers.BertConfig(), self.task)
        self.assertIn("vision_config", str(cm.exception))
        fct = get_task_module(self.task).get_inputs
        with self.assertRaises(TaskInputError) as cm:
            fct(None, None, image_size=32, num_channels=3, prompt="masks")
        self.assertIn("prompt='masks'", str(cm.exception))
        with self.assertRaises(TaskInputError) as cm:
            fct(None, None, image_size=32, num_channels=3, num_points=0)
        self.assertIn("num_points", str(cm.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)

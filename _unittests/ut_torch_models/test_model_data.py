import unittest

import torch

from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.torch_models import ModelData, weights_size


class TestModelData(ExtTestCase):
    def _data(self, **kwargs):
        return ModelData(model="m", inputs={"x": 1}, dynamic_shapes={"x": {0: "batch"}}, **kwargs)

    def test_getitem_returns_fields(self):
        data = self._data(task="text-generation")
        self.assertEqual(data["model"], "m")
        self.assertEqual(data["task"], "text-generation")
        self.assertEqual(data.get("inputs2", 5), 5)

    def test_missing_or_none_field_is_a_key_error(self):
        data = self._data()
        with self.assertRaises(KeyError) as cm:
            data["inputs2"]
        self.assertIn("'inputs2' is None", str(cm.exception))
        with self.assertRaises(KeyError) as cm:
            data["input"]
        self.assertIn("no field 'input'", str(cm.exception))
        self.assertNotIn(0, data)

    def test_keys_only_list_computed_fields(self):
        data = self._data(size=0)
        self.assertEqual(data.keys(), ["model", "inputs", "dynamic_shapes", "size"])
        self.assertEqual(dict(data)["size"], 0)
        self.assertEqual(len(data), 4)
        self.assertEqual([k for k, _ in data.items()], data.keys())

    def test_setitem(self):
        data = self._data()
        data["inputs2"] = {"x": 2}
        self.assertIn("inputs2", data)
        with self.assertRaises(KeyError):
            data["other"] = 1

    def test_weights_size_counts_tied_weights_once(self):
        lin = torch.nn.Linear(4, 4, bias=False)
        model = torch.nn.Sequential(lin, lin)
        self.assertEqual(weights_size(model), (64, 16))
        bf = torch.nn.Linear(2, 2).to(torch.bfloat16)
        self.assertEqual(weights_size(bf), (12, 6))
        self.assertEqual(weights_size(torch.nn.Sequential()), (0, 0))


if __name__ == "__main__":
    unittest.main(verbosity=2)

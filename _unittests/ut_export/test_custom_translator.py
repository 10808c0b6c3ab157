"""
Tests of the translator of the ``custom`` exporter (graph walk, naming, dimensions,
functionalization, errors, saving), the translations of the operators have their own file.
"""

import os
import tempfile
import unittest

import onnx
import onnx_ir as ir
import onnxruntime
import torch

from onnx_diagnostic.export.api import ExportStepError, to_onnx
from onnx_diagnostic.export.custom.translator import (
    CustomProgram,
    TranslationError,
    UnsupportedATenOpError,
    needs_functionalization,
    rename_dimensions,
    source_line,
    translate_program,
)
from onnx_diagnostic.ext_test_case import ExtTestCase, ignore_warnings


def _run(model_proto, feeds):
    sess = onnxruntime.InferenceSession(
        model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return sess.run(
        None, {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in feeds.items()}
    )


class TestTranslateProgram(ExtTestCase):
    def test_bad_arguments(self):
        with self.assertRaisesRegex(TypeError, "ep must be a torch.export.ExportedProgram"):
            translate_program(torch.nn.Linear(2, 2))

        class M(torch.nn.Module):
            def forward(self, x):
                return x + 1

        ep = torch.export.export(M(), (torch.rand(2),))
        with self.assertRaisesRegex(ValueError, "target_opset must be >= 18"):
            translate_program(ep, target_opset=17)

    def test_initializers_named_after_the_state_dict(self):
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        x = torch.rand(5, 4)
        ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        program = translate_program(ep)
        names = set(program.model.graph.initializers)
        # the weights of linear are stored transposed, the originals are not kept
        self.assertIn("0.weight_T", names)
        self.assertIn("0.bias", names)
        self.assertNotIn("0.weight", names)
        self.assertIsInstance(program.model.graph.inputs[0].shape[0], ir.SymbolicDim)
        x2 = torch.rand(7, 4)
        self.assertEqualArray(
            model(x2).detach().numpy(), _run(program.model_proto, {"input": x2})[0], atol=1e-6
        )

    def test_tied_weights_share_one_initializer(self):
        class Tied(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = torch.nn.Embedding(10, 4)
                self.head = torch.nn.Linear(4, 10, bias=False)
                self.head.weight = self.emb.weight

            def forward(self, ids):
                return self.head(self.emb(ids))

        model = Tied()
        ids = torch.tensor([[1, 2, 3]])
        program = translate_program(torch.export.export(model, (ids,)))
        self.assertEqualArray(
            model(ids).detach().numpy(), _run(program.model_proto, {"ids": ids})[0], atol=1e-6
        )

    def test_zero_d_and_empty_inputs(self):
        class M(torch.nn.Module):
            def forward(self, x, y):
                return x * 2 + y.sum()

        x, y = torch.tensor(3.0), torch.zeros((0, 4))
        program = translate_program(torch.export.export(M(), (x, y)))
        got = _run(program.model_proto, {"x": x, "y": y})[0]
        self.assertEqual(got.shape, ())
        self.assertEqual(float(got), 6.0)

    def test_bfloat16_types(self):
        model = torch.nn.Linear(4, 3).to(torch.bfloat16)
        program = translate_program(
            torch.export.export(model, (torch.rand(2, 4, dtype=torch.bfloat16),))
        )
        self.assertEqual(program.model.graph.inputs[0].dtype, ir.DataType.BFLOAT16)
        self.assertEqual(program.model.graph.outputs[0].dtype, ir.DataType.BFLOAT16)
        onnx.checker.check_model(program.model_proto)

    def test_set_grad_enabled_and_autocast_are_inlined(self):
        class M(torch.nn.Module):
            def forward(self, x):
                with torch.no_grad():
                    y = x.cos()
                with torch.autocast("cpu", enabled=False):
                    z = y * x
                return z + 1

        x = torch.rand(3, 4)
        ep = torch.export.export(M(), (x,))
        program = translate_program(ep)
        self.assertEqualArray(M()(x).numpy(), _run(program.model_proto, {"x": x})[0], atol=1e-6)

    def test_inplace_op_without_view_is_rebound(self):
        class M(torch.nn.Module):
            def forward(self, x):
                y = x * 2
                y.add_(1)
                return y * 3

        x = torch.rand(3, 4)
        ep = torch.export.export(M(), (x,))
        self.assertFalse(needs_functionalization(ep.graph_module))
        program = translate_program(ep)
        self.assertEqualArray(M()(x).numpy(), _run(program.model_proto, {"x": x})[0], atol=1e-6)

    def test_write_into_a_view_is_functionalized(self):
        class Shift(torch.nn.Module):
            def forward(self, ids):
                shifted = ids.new_zeros(ids.shape)
                shifted[:, 1:] = ids[:, :-1].clone()
                shifted[:, 0] = 7
                return shifted

        ids = torch.randint(0, 100, (2, 5))
        ep = torch.export.export(
            Shift(),
            (ids,),
            dynamic_shapes=({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", min=3)},),
        )
        self.assertTrue(needs_functionalization(ep.graph_module))
        n_before = len(ep.graph.nodes)
        program = translate_program(ep)
        # the exported program given by the user is not modified
        self.assertEqual(n_before, len(ep.graph.nodes))
        ids2 = torch.randint(0, 100, (3, 9))
        self.assertEqualArray(Shift()(ids2).numpy(), _run(program.model_proto, {"ids": ids2})[0])

    def test_output_which_is_an_input(self):
        class M(torch.nn.Module):
            def forward(self, x, y):
                return x, y + 1

        x, y = torch.rand(2), torch.rand(2)
        onx = to_onnx(M(), (x, y), exporter="custom")
        self.assertEqual([o.name for o in onx.graph.output], ["output_0", "output_1"])
        got = _run(onx, {"x": x, "y": y})
        self.assertEqualArray(x.numpy(), got[0])
        self.assertEqualArray((y + 1).numpy(), got[1])


class TestErrors(ExtTestCase):
    def test_unsupported_op_names_op_source_and_shapes(self):
        class Fft(torch.nn.Module):
            def forward(self, x):
                return torch.fft.rfft(x).abs()

        ep = torch.export.export(Fft(), (torch.rand(2, 8),))
        with self.assertRaises(UnsupportedATenOpError) as cm:
            translate_program(ep)
        msg = str(cm.exception)
        self.assertRegex(msg, r"no translation for aten\.(fft_rfft|_fft_r2c)")
        self.assertIn("test_custom_translator.py", msg)
        self.assertIn("return torch.fft.rfft(x).abs()", msg)
        self.assertIn("float32[2x8]", msg)
        self.assertIsInstance(cm.exception, NotImplementedError)
        self.assertIn("test_custom_translator.py", cm.exception.source)

    def test_to_onnx_reports_the_translation_step(self):
        class Fft(torch.nn.Module):
            def forward(self, x):
                return torch.fft.rfft(x).abs()

        with self.assertRaises(ExportStepError) as cm:
            to_onnx(Fft(), (torch.rand(2, 8),), exporter="custom")
        self.assertEqual(cm.exception.step, "translation")
        self.assertIn("fft", str(cm.exception))
        self.assertIn("exporter='onnx-dynamo'", cm.exception.hint)
        self.assertIsInstance(cm.exception.__cause__, UnsupportedATenOpError)

    def test_failing_translation_is_wrapped(self):
        class Drop(torch.nn.Module):
            def forward(self, x):
                return torch.nn.functional.dropout(x, 0.5, training=True)

        ep = torch.export.export(Drop(), (torch.rand(2, 8),))
        with self.assertRaises(TranslationError) as cm:
            translate_program(ep)
        self.assertIn("dropout", str(cm.exception))
        self.assertIn("model.eval()", str(cm.exception))

    def test_source_line_without_stack_trace(self):
        node = torch.fx.Graph().placeholder("x")
        self.assertEqual(source_line(node), "<unknown source>")

    def test_unknown_exporter_lists_custom(self):
        with self.assertRaisesRegex(ValueError, "'custom'.*'onnx-dynamo'|'onnx-dynamo'.*'custom'"):
            to_onnx(torch.nn.ReLU(), (torch.rand(2),), exporter="nope")


class TestDimensionsAndSave(ExtTestCase):
    def test_rename_dimensions_inside_expressions(self):
        class M(torch.nn.Module):
            def forward(self, x, y):
                return torch.cat([x, y], dim=1)

        x, y = torch.rand(2, 3), torch.rand(2, 4)
        onx = to_onnx(
            M(),
            (x, y),
            dynamic_shapes=({0: "batch", 1: "a"}, {0: "batch", 1: "b"}),
            exporter="custom",
        )
        dims = [
            [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in onx.graph.input
        ]
        self.assertEqual(dims, [["batch", "a"], ["batch", "b"]])
        out = [d.dim_param or d.dim_value for d in onx.graph.output[0].type.tensor_type.shape.dim]
        self.assertEqual(out[0], "batch")
        self.assertIn("a", out[1])
        self.assertIn("b", out[1])
        self.assertNotIn(
            "s", out[1].replace(" ", "").replace("+", "").replace("a", "").replace("b", "")
        )

    def test_rename_dimensions_counts(self):
        x = ir.Value(
            name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(["s1", "s1 + s12", 3])
        )
        graph = ir.Graph([x], [x], nodes=[], opset_imports={"": 23})
        model = ir.Model(graph, ir_version=10)
        self.assertEqual(rename_dimensions(model, {"s1": "batch"}), 2)
        self.assertEqual([getattr(d, "value", d) for d in x.shape], ["batch", "batch + s12", 3])
        self.assertEqual(rename_dimensions(model, {}), 0)

    @ignore_warnings(UserWarning)
    def test_save_with_external_data(self):
        model = torch.nn.Linear(64, 32)
        x = torch.rand(3, 64)
        program = translate_program(torch.export.export(model, (x,)))
        self.assertIsInstance(program, CustomProgram)
        with tempfile.TemporaryDirectory() as folder:
            name = os.path.join(folder, "m.onnx")
            program.save(name, external_data=True)
            self.assertExists(name + ".data")
            sess = onnxruntime.InferenceSession(name, providers=["CPUExecutionProvider"])
            got = sess.run(None, {"input": x.numpy()})[0]
            self.assertEqualArray(model(x).detach().numpy(), got, atol=1e-6)
            name2 = os.path.join(folder, "m2.onnx")
            program.save(name2)
            self.assertFalse(os.path.exists(name2 + ".data"))

    def test_optimize_reports_pass_counts(self):
        class Norm(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = torch.nn.Parameter(torch.rand(8))

            def forward(self, x):
                x = x.to(torch.float32)
                v = x.pow(2).mean(-1, keepdim=True)
                return self.weight * (x * torch.rsqrt(v + 1e-6))

        x = torch.rand(2, 3, 8)
        model = Norm()
        program = translate_program(
            torch.export.export(
                model,
                (x,),
                dynamic_shapes=({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")},),
            )
        )
        program.optimize()
        self.assertGreater(program.pass_counts["fuse_rms_normalization"], 0)
        ops = [n.op_type for n in program.model.graph]
        self.assertIn(ops[0], ("RMSNormalization", "SimplifiedLayerNormalization"))
        x2 = torch.rand(3, 5, 8)
        self.assertEqualArray(
            model(x2).detach().numpy(), _run(program.model_proto, {"x": x2})[0], atol=1e-5
        )


if __name__ == "__main__":
    unittest.main(verbosity=2)

import os
import subprocess
import sys
import tempfile
import unittest

from onnx_diagnostic.ext_test_case import ExtTestCase


class TestPlotLegend(ExtTestCase):
    def tearDown(self):
        import matplotlib.pyplot as plt

        plt.close("all")

    def test_texts_and_colour(self):
        import matplotlib.colors

        from onnx_diagnostic.doc import plot_legend

        ax = plot_legend("dynamic shapes\nfor cache", "torch.export.export", "tomato")
        texts = [t.get_text() for t in ax.texts]
        self.assertEqual(texts, ["dynamic shapes\nfor cache", "torch.export.export"])
        main = ax.texts[0]
        self.assertEqual(main.get_fontsize(), 15)
        self.assertEqual(
            matplotlib.colors.to_hex(main.get_color()), matplotlib.colors.to_hex("tomato")
        )
        box = main.get_bbox_patch()
        self.assertIsNotNone(box)
        self.assertEqual(type(box.get_boxstyle()).__name__, "Round")
        self.assertFalse(ax.axison)

    def test_no_bottom_text_and_fontsize(self):
        from onnx_diagnostic.doc import plot_legend

        ax = plot_legend("steal", fontsize=20)
        self.assertEqual([t.get_text() for t in ax.texts], ["steal"])
        self.assertEqual(ax.texts[0].get_fontsize(), 20)

    def test_saves_a_picture(self):
        from onnx_diagnostic.doc import plot_legend

        ax = plot_legend("Tiny-LLM", "torch.export.export", "#336699")
        with tempfile.TemporaryDirectory() as tmp:
            name = os.path.join(tmp, "legend.png")
            ax.figure.savefig(name)
            self.assertExists(name)
            self.assertGreater(os.path.getsize(name), 1000)

    def test_bad_input(self):
        from onnx_diagnostic.doc import plot_legend

        with self.assertRaises(ValueError) as cm:
            plot_legend("text", "", "not-a-colour")
        self.assertIn("color='not-a-colour'", str(cm.exception))
        with self.assertRaises(TypeError) as cm:
            plot_legend(["text"])
        self.assertIn("text must be a string", str(cm.exception))
        with self.assertRaises(TypeError) as cm:
            plot_legend("text", None)
        self.assertIn("text_bottom must be a string", str(cm.exception))

    def test_works_without_display(self):
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
        code = (
            "import sys\n"
            "import onnx_diagnostic.doc\n"
            "print('matplotlib' in sys.modules)\n"
            "ax = onnx_diagnostic.doc.plot_legend('a', 'b', 'blue')\n"
            "print(type(ax).__name__)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        ).stdout
        self.assertEqual(out.split(), ["False", "Axes"])


class TestDocstrings(ExtTestCase):
    def test_examples_in_docstrings_run(self):
        from onnx_diagnostic import doc as module_under_test

        self.assertDocstringExamples(module_under_test)


if __name__ == "__main__":
    unittest.main(verbosity=2)

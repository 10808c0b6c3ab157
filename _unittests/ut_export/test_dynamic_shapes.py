import unittest
import warnings

import torch

from onnx_diagnostic.cache_helpers import (
    make_dynamic_cache,
    make_encoder_decoder_cache,
)
from onnx_diagnostic.ext_test_case import ExtTestCase
from onnx_diagnostic.export import ModelInputs
from onnx_diagnostic.export.dynamic_shapes import DynamicShapesError
from onnx_diagnostic.helpers.compat import cache_class
from onnx_diagnostic.helpers.compat import cache_arg_name

#: the cache argument as the installed transformers names it
CACHE = cache_arg_name()

DYN = torch.export.Dim.DYNAMIC


class AddModel(torch.nn.Module):
    def forward(self, x, y):
        return x + y


class CacheModel(torch.nn.Module):
    def forward(self, cache, z):
        return (
            z
            + cache.key_cache[0]
            + cache.key_cache[1]
            + cache.value_cache[0]
            + cache.value_cache[1]
        )


def _cache(n_layers, *shape):
    return make_dynamic_cache([(torch.randn(*shape), torch.randn(*shape)) for _ in range(n_layers)])


def _dims(ep):
    """Shapes of the placeholders of an exported program, as strings."""
    return [
        tuple(str(d) for d in n.meta["val"].shape)
        for n in ep.graph.nodes
        if n.op == "placeholder" and "val" in n.meta
    ]


class TestModelInputs(ExtTestCase):
    def test_inputs_are_normalized(self):
        x, y = torch.randn(5, 6), torch.randn(1, 6)
        mi = ModelInputs(AddModel(), [(x, y), dict(x=x, y=y), ((x,), dict(y=y)), [x, y]])
        self.assertEqual(len(mi.inputs), 4)
        self.assertEqual([len(a) for a, _ in mi.inputs], [2, 0, 1, 2])
        self.assertEqual([list(k) for _, k in mi.inputs], [[], ["x", "y"], ["y"], []])
        self.assertIs(mi.inputs[2][0][0], x)

    def test_positional_seed(self):
        x, y = torch.randn(5, 6), torch.randn(1, 6)
        inputs = [(x, y), (torch.randn((7, 8)), torch.randn((1, 8)))]
        ds = ModelInputs(AddModel(), inputs).guess_dynamic_shapes()
        self.assertEqual(ds, (({0: DYN, 1: DYN}, {1: DYN}), {}))
        ep = torch.export.export(AddModel(), (x, y), dynamic_shapes=ds[0])
        x_shape, y_shape = _dims(ep)
        self.assertEqual(y_shape[0], "1")
        self.assertEqual(x_shape[1], y_shape[1])
        self.assertFalse(x_shape[0].isdigit())

    def test_named_seed(self):
        x, y = torch.randn(5, 6), torch.randn(1, 6)
        inputs = [dict(x=x, y=y), dict(x=torch.randn((7, 8)), y=torch.randn((1, 8)))]
        ds = ModelInputs(AddModel(), inputs).guess_dynamic_shapes()
        self.assertEqual(ds, ((), {"x": {0: DYN, 1: DYN}, "y": {1: DYN}}))
        torch.export.export(AddModel(), (), kwargs=dict(x=x, y=y), dynamic_shapes=ds[1])

    def test_mixed_seed_and_move_to_kwargs(self):
        x, y = torch.randn(5, 6), torch.randn(1, 6)
        inputs = [((x,), dict(y=y)), ((torch.randn((7, 8)),), dict(y=torch.randn((1, 8))))]
        mi = ModelInputs(AddModel(), inputs)
        ds = mi.guess_dynamic_shapes()
        self.assertEqual(ds, (({0: DYN, 1: DYN},), {"y": {1: DYN}}))
        new_args, new_kwargs, new_ds = mi.move_to_kwargs(*mi.inputs[0], ds)
        self.assertEqual(new_args, ())
        self.assertEqual(list(new_kwargs), ["x", "y"])
        self.assertIs(new_kwargs["x"], x)
        self.assertEqual(new_ds, ((), {"x": {0: DYN, 1: DYN}, "y": {1: DYN}}))
        torch.export.export(AddModel(), new_args, kwargs=new_kwargs, dynamic_shapes=new_ds[1])

    def test_cache_seed_flat_layout(self):
        cache = _cache(2, 2, 4, 3, 7)
        cache2 = _cache(2, 3, 4, 4, 8)
        inputs = [(cache, torch.randn((1, 1, 1, 7))), (cache2, torch.randn((1, 1, 1, 8)))]
        ds = ModelInputs(CacheModel(), inputs).guess_dynamic_shapes()
        self.assertEqual(ds, (([{0: DYN, 2: DYN, 3: DYN}] * 4, {3: DYN}), {}))
        ep = torch.export.export(CacheModel(), inputs[0], dynamic_shapes=ds[0], strict=False)
        shapes = _dims(ep)
        self.assertEqual(len(shapes), 5)
        self.assertEqual(shapes[0][1], "4")
        self.assertEqual(shapes[0], shapes[3])

    def test_nested_structures_and_model_output(self):
        from transformers.modeling_outputs import BaseModelOutput

        def make(n):
            return dict(
                a=[torch.randn(n, 2), {"b": torch.randn(3, n), "c": None}],
                o=BaseModelOutput(last_hidden_state=torch.randn(1, n)),
                s=torch.tensor(float(n)),
                k=3,
            )

        ds = ModelInputs(lambda a, o, s, k: None, [make(2), make(5)]).guess_dynamic_shapes()
        self.assertEqual(
            ds[1],
            {
                "a": [{0: DYN}, {"b": {1: DYN}, "c": None}],
                "o": [{1: DYN}],
                "s": {},
                "k": None,
            },
        )

    def test_encoder_decoder_cache(self):
        def make(n):
            return make_encoder_decoder_cache(_cache(1, 1, 2, n, 4), _cache(1, 1, 2, 5, 4))

        ds = ModelInputs(lambda c: None, [(make(3),), (make(6),)]).guess_dynamic_shapes()
        self.assertEqual(ds[0], ([[{2: DYN}, {2: DYN}], [{}, {}]],))

    @unittest.skipIf(cache_class("DynamicSlidingWindowLayer") is None, "no sliding layers")
    def test_mixed_layer_types_error_names_children(self):
        def make(n, types):
            pairs = [(torch.randn(1, 2, n, 4), torch.randn(1, 2, n, 4)) for _ in types]
            return make_dynamic_cache(pairs, layer_types=types, sliding_window=4)

        full, sliding = "full_attention", "sliding_attention"
        ds = ModelInputs(
            lambda c: None, [(make(3, [sliding, full]),), (make(5, [sliding, full]),)]
        ).guess_dynamic_shapes()
        self.assertEqual(ds, (([{2: DYN}] * 4,), {}))
        mi = ModelInputs(lambda c: None, [(make(3, [sliding, full]),), (make(5, [full, full]),)])
        with self.assertRaises(DynamicShapesError) as cm:
            mi.guess_dynamic_shapes()
        self.assertIn("inputs[1][0]", str(cm.exception))
        self.assertIn("sliding_key_0", str(cm.exception))

    def test_auto_true_gives_auto(self):
        inputs = [(torch.randn(2, 3), torch.randn(1, 3)), (torch.randn(4, 5), torch.randn(1, 5))]
        ds = ModelInputs(AddModel(), inputs).guess_dynamic_shapes(auto=True)
        auto = torch.export.Dim.AUTO
        self.assertEqual(ds, (({0: auto, 1: auto}, {1: auto}), {}))

    def test_auto_dim_shares_dims(self):
        inputs = [(torch.randn(2, 3), torch.randn(1, 3)), (torch.randn(4, 5), torch.randn(1, 5))]
        (dx, dy), _ = ModelInputs(AddModel(), inputs).guess_dynamic_shapes(auto="dim")
        self.assertEqual(dx[0].__name__, "batch")
        self.assertEqual(dx[1].__name__, "x_1")
        self.assertIs(dx[1], dy[1])
        ep = torch.export.export(AddModel(), inputs[0], dynamic_shapes=(dx, dy))
        self.assertEqual(len(ep.range_constraints), 2)

    def test_auto_dim_derived_dimension_exports(self):
        class Model(torch.nn.Module):
            def forward(self, x, mask):
                return x * mask[:, 1:]

        inputs = [
            dict(x=torch.randn(2, 3), mask=torch.ones(2, 4)),
            dict(x=torch.randn(2, 5), mask=torch.ones(2, 6)),
        ]
        _, ds = ModelInputs(Model(), inputs).guess_dynamic_shapes(auto="dim")
        self.assertEqual(ds["x"][1].__name__, "x_1")
        self.assertEqual(str(ds["mask"][1]), str(ds["x"][1] + 1))
        ep = torch.export.export(Model(), (), kwargs=inputs[0], dynamic_shapes=ds)
        got = ep.module()(x=torch.ones(2, 7), mask=torch.ones(2, 8))
        self.assertEqual(got.shape, (2, 7))

    def test_auto_dim_cache_plus_seq_exports(self):
        import transformers

        config = transformers.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=1000,
            max_position_embeddings=256,
        )
        model = transformers.LlamaForCausalLM(config).eval()

        def make(batch, seq, past):
            return dict(
                input_ids=torch.randint(0, 1000, (batch, seq)),
                attention_mask=torch.ones(batch, seq + past, dtype=torch.int64),
                position_ids=torch.arange(past, past + seq)[None].expand(batch, seq).contiguous(),
                past_key_values=_cache(1, batch, 1, past, 16),
            )

        # the input sets use the old name of the cache argument, ModelInputs maps it to the
        # name forward declares (cache on transformers>=5.24)
        sets = [make(2, 3, 5), make(3, 4, 7)]
        mi = ModelInputs(model, sets)
        _, ds = mi.guess_dynamic_shapes(auto="dim")
        self.assertIn(CACHE, mi.inputs[0][1])
        batch, seq = ds["input_ids"][0], ds["input_ids"][1]
        self.assertEqual(batch.__name__, "batch")
        self.assertIs(ds["position_ids"][1], seq)
        self.assertIs(ds[CACHE][0][0], batch)
        self.assertIs(ds[CACHE][1][2], ds[CACHE][0][2])
        mask = ds["attention_mask"][1]
        self.assertEqual(mask.__name__, f"input_ids_1_plus_{CACHE}_2")
        kwargs = mi.inputs[0][1]
        ep = torch.export.export(model, (), kwargs=kwargs, dynamic_shapes=ds, strict=False)
        new = make(4, 2, 9)
        got = ep.module()(**{CACHE: new.pop("past_key_values")}, **new)
        self.assertEqual(got.logits.shape, (4, 2, 1000))

    def test_var_keyword_arguments_are_nested(self):
        def forward(x, **kwargs):
            return x

        inputs = [
            dict(x=torch.ones(2), extra=torch.ones(3)),
            dict(x=torch.ones(4), extra=torch.ones(5)),
        ]
        ds = ModelInputs(forward, inputs).guess_dynamic_shapes()
        self.assertEqual(ds, ((), {"x": {0: DYN}, "kwargs": {"extra": {0: DYN}}}))

        def clash(x, **kwargs):
            return x

        inputs = [dict(x=torch.ones(2), kwargs=torch.ones(3), y=torch.ones(1))] * 2
        with self.assertRaises(DynamicShapesError):
            ModelInputs(clash, inputs).guess_dynamic_shapes()

    def test_one_input_set_is_static_with_warning(self):
        cache = _cache(1, 1, 2, 3, 4)
        mi = ModelInputs(lambda x, c: None, [(torch.randn(2, 3), cache)])
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            ds = mi.guess_dynamic_shapes()
        self.assertEqual(ds, (({}, [{}, {}]), {}))
        self.assertTrue(any("only one input set" in str(x.message) for x in w))

    def test_zero_dim_and_empty_tensors(self):
        inputs = [(torch.tensor(1.0), torch.empty(0, 3)), (torch.tensor(2.0), torch.empty(4, 3))]
        ds = ModelInputs(lambda a, b: None, inputs).guess_dynamic_shapes()
        self.assertEqual(ds, (({}, {0: DYN}), {}))

    def test_different_cache_structures_name_path_and_both(self):
        inputs = [dict(x=torch.randn(2), past_key_values=_cache(2, 1, 2, 3, 4))]
        inputs.append(dict(x=torch.randn(3), past_key_values=_cache(1, 1, 2, 5, 4)))
        with self.assertRaises(DynamicShapesError) as cm:
            ModelInputs(lambda x, past_key_values: None, inputs).guess_dynamic_shapes()
        msg = str(cm.exception)
        self.assertIn("inputs[1]['past_key_values']", msg)
        self.assertIn("DynamicCache(key_cache=#1[T1s1x2x5x4]", msg)
        self.assertIn("DynamicCache(key_cache=#2[T1s1x2x3x4,T1s1x2x3x4]", msg)

    def test_rank_and_none_differences(self):
        cases = [
            ([dict(a=[torch.randn(2)])], [dict(a=[torch.randn(2, 2)])], "inputs[1]['a'][0]: rank"),
            ([(None,)], [(torch.randn(2),)], "inputs[1][0]: type Tensor vs NoneType"),
            ([({"a": 1},)], [({"b": 1},)], "inputs[1][0]: keys"),
            ([([1, 2],)], [([1],)], "inputs[1][0]: 1 vs 2 elements"),
            ([(1,)], [(torch.randn(1),)], "inputs[1][0]: type Tensor vs int"),
            (
                [(torch.ones(2),)],
                [(torch.ones(3, dtype=torch.int64),)],
                "inputs[1][0]: dtype int64 vs float32: T7s3 vs T1s2 in inputs[0]",
            ),
            (
                [(torch.ones(2, dtype=torch.bfloat16),)],
                [(torch.ones(2, dtype=torch.float16),)],
                "inputs[1][0]: dtype float16 vs bfloat16",
            ),
        ]
        for first, second, expected in cases:
            with self.subTest(expected=expected):
                with self.assertRaises(DynamicShapesError) as cm:
                    ModelInputs(lambda a: None, first + second).guess_dynamic_shapes()
                self.assertIn(expected, str(cm.exception))

    def test_different_arguments(self):
        x = torch.randn(2)
        with self.assertRaises(DynamicShapesError) as cm:
            ModelInputs(AddModel(), [(x, x), (x,)]).guess_dynamic_shapes()
        self.assertIn("positional", str(cm.exception))
        with self.assertRaises(DynamicShapesError) as cm:
            ModelInputs(AddModel(), [dict(x=x, y=x), dict(x=x)]).guess_dynamic_shapes()
        self.assertIn("inputs[1]: missing a required argument: 'y'", str(cm.exception))
        with self.assertRaises(DynamicShapesError) as cm:
            ModelInputs(lambda x, y=None: x, [dict(x=x, y=x), dict(x=x)]).guess_dynamic_shapes()
        self.assertIn("inputs[1]: named arguments ['x'] vs ['x', 'y']", str(cm.exception))

    def test_input_sets_checked_against_forward(self):
        x = torch.randn(2)
        cases = [
            ([(x, x), (x, x, x)], "inputs[1]: too many positional arguments (3 positional"),
            ([dict(x=x, y=x, z=x)], "inputs[0]: got an unexpected keyword argument 'z'"),
            ([dict(y=x)], "inputs[0]: missing a required argument: 'x'"),
            ([((x,), dict(x=x))], "inputs[0]: multiple values for argument 'x'"),
        ]
        for inputs, expected in cases:
            with self.subTest(expected=expected):
                with self.assertRaises(DynamicShapesError) as cm:
                    ModelInputs(AddModel(), inputs)
                self.assertIn(expected, str(cm.exception))
                self.assertIn("forward(x, y)", str(cm.exception))
        # **kwargs takes any name, a callable without signature is not checked
        mi = ModelInputs(lambda x, **kw: x, [dict(x=x, anything=x), dict(x=x, anything=x)])
        self.assertEqual(len(mi.inputs), 2)
        ModelInputs(torch.add, [(x, x), (x, x)])

    def test_unregistered_class(self):
        class Custom:
            pass

        with self.assertRaises(DynamicShapesError) as cm:
            ModelInputs(lambda a: None, [(Custom(),), (Custom(),)]).guess_dynamic_shapes()
        self.assertIn("inputs[0][0]: type Custom is not registered", str(cm.exception))

    def test_bad_arguments(self):
        with self.assertRaises(TypeError):
            ModelInputs(AddModel(), torch.randn(2))
        with self.assertRaises(ValueError):
            ModelInputs(AddModel(), [])
        with self.assertRaises(TypeError) as cm:
            ModelInputs(AddModel(), [(torch.randn(1),), 3])
        self.assertIn("inputs[1]", str(cm.exception))
        mi = ModelInputs(AddModel(), [(torch.randn(1), torch.randn(1))] * 2)
        # a string other than "dim" is a prefix since onnx-diagnostic's semantics were adopted
        with self.assertRaises(ValueError):
            mi.guess_dynamic_shapes(auto=3)

    def test_move_to_kwargs_errors(self):
        class VarArgs(torch.nn.Module):
            def forward(self, *args):
                return args[0]

        x = torch.randn(2)
        mi = ModelInputs(VarArgs(), [(x,), (x,)])
        with self.assertRaises(ValueError) as cm:
            mi.move_to_kwargs((x,), {}, (({},), {}))
        self.assertIn("args[0] cannot be moved", str(cm.exception))
        mi = ModelInputs(AddModel(), [((x,), dict(y=x))])
        with self.assertRaises(ValueError) as cm:
            mi.move_to_kwargs((x,), dict(x=x), (({},), {"x": {}}))
        self.assertIn("'x'", str(cm.exception))
        with self.assertRaises(TypeError):
            mi.move_to_kwargs((x,), {}, [{}])
        with self.assertRaises(ValueError):
            mi.move_to_kwargs((x,), {}, ((), {}))

    def test_inputs_are_not_modified(self):
        cache = _cache(1, 1, 2, 3, 4)
        first = dict(x=torch.randn(2), c=cache)
        mi = ModelInputs(
            lambda x, c: None, [first, dict(x=torch.randn(3), c=_cache(1, 1, 2, 4, 4))]
        )
        mi.guess_dynamic_shapes(auto="dim")
        self.assertEqual(list(first), ["x", "c"])
        self.assertIs(first["c"], cache)
        self.assertEqual(len(cache.layers), 1)


class TestSeed001(ExtTestCase):
    """Seed 001 (plot_export_with_dynamic_cache) runs unchanged."""

    def test_seed_001_runs_unchanged(self):
        def seed():
            import pprint

            import torch

            from onnx_diagnostic import doc
            from onnx_diagnostic.cache_helpers import make_dynamic_cache
            from onnx_diagnostic.export import ModelInputs
            from onnx_diagnostic.ext_test_case import has_transformers
            from onnx_diagnostic.helpers import string_type
            from onnx_diagnostic.torch_export_patches import bypass_export_some_errors

            results = []

            class Model(torch.nn.Module):
                def forward(self, x, y):
                    return x + y

            model = Model()
            x = torch.randn((5, 6))
            y = torch.randn((1, 6))
            model(x, y)  # to check it works

            ep = torch.export.export(model, (x, y))
            print(ep)

            inputs = [(x, y), (torch.randn((7, 8)), torch.randn((1, 8)))]
            mi = ModelInputs(Model(), inputs)
            ds = mi.guess_dynamic_shapes()
            pprint.pprint(ds)
            results.append(ds)

            ep = torch.export.export(model, (x, y), dynamic_shapes=ds[0])
            print(ep)

            class Model(torch.nn.Module):
                def forward(self, x, y):
                    return x + y

            model = Model()
            x = torch.randn((5, 6))
            y = torch.randn((1, 6))
            model(x=x, y=y)  # to check it works

            inputs = [dict(x=x, y=y), dict(x=torch.randn((7, 8)), y=torch.randn((1, 8)))]
            mi = ModelInputs(Model(), inputs)
            ds = mi.guess_dynamic_shapes()
            pprint.pprint(ds)
            results.append(ds)

            ep = torch.export.export(model, (), kwargs=dict(x=x, y=y), dynamic_shapes=ds[1])
            print(ep)

            class Model(torch.nn.Module):
                def forward(self, x, y):
                    return x + y

            model = Model()
            x = torch.randn((5, 6))
            y = torch.randn((1, 6))
            model(x, y=y)  # to check it works

            inputs = [((x,), dict(y=y)), ((torch.randn((7, 8)),), dict(y=torch.randn((1, 8))))]
            mi = ModelInputs(Model(), inputs)
            ds = mi.guess_dynamic_shapes()
            pprint.pprint(ds)
            results.append(ds)

            new_args, new_kwargs, new_ds = mi.move_to_kwargs(*mi.inputs[0], ds)
            pprint.pprint(new_ds)
            results.append(new_ds)

            ep = torch.export.export(model, new_args, kwargs=new_kwargs, dynamic_shapes=new_ds[1])
            print(ep)

            class Model(torch.nn.Module):
                def forward(self, cache, z):
                    return (
                        z
                        + cache.key_cache[0]
                        + cache.key_cache[1]
                        + cache.value_cache[0]
                        + cache.value_cache[1]
                    )

            model = Model()

            n_layers = 2
            bsize, nheads, slen, dim = 2, 4, 3, 7
            cache = make_dynamic_cache(
                [
                    (torch.randn(bsize, nheads, slen, dim), torch.randn(bsize, nheads, slen, dim))
                    for i in range(n_layers)
                ]
            )
            z = torch.randn((1, 1, 1, 7))
            model(cache, z)  # to check it works.

            print(string_type(cache, with_shape=True))

            cache2 = make_dynamic_cache(
                [
                    (
                        torch.randn(bsize + 1, nheads, slen + 1, dim + 1),
                        torch.randn(bsize + 1, nheads, slen + 1, dim + 1),
                    )
                    for i in range(n_layers)
                ]
            )
            inputs = [
                (cache, z),
                (cache2, torch.randn((1, 1, 1, 8))),
            ]

            print(string_type(inputs[0], with_shape=True))

            mi = ModelInputs(Model(), inputs)
            ds = mi.guess_dynamic_shapes()
            pprint.pprint(ds)
            results.append(ds)

            if has_transformers("4.50"):
                ep = torch.export.export(model, inputs[0], dynamic_shapes=ds[0], strict=False)
            else:
                with bypass_export_some_errors(patch_transformers=True) as modificator:
                    ep = torch.export.export(
                        model, modificator(inputs[0]), dynamic_shapes=ds[0], strict=False
                    )
            print(ep)
            results.append(ep)

            doc.plot_legend("dynamic shapes\nfor cache", "torch.export.export", "tomato")
            return results

        results, out, _ = self.capture(seed)
        self.assertEqual(results[0], (({0: DYN, 1: DYN}, {1: DYN}), {}))
        self.assertEqual(results[1], ((), {"x": {0: DYN, 1: DYN}, "y": {1: DYN}}))
        self.assertEqual(results[2], (({0: DYN, 1: DYN},), {"y": {1: DYN}}))
        self.assertEqual(results[3], ((), {"x": {0: DYN, 1: DYN}, "y": {1: DYN}}))
        # the canonical flat layout, seed 001 printed an older nested one
        self.assertEqual(results[4], (([{0: DYN, 2: DYN, 3: DYN}] * 4, {3: DYN}), {}))
        self.assertIn(
            "DynamicCache(key_cache=#2[T1s2x4x3x7,T1s2x4x3x7], "
            "value_cache=#2[T1s2x4x3x7,T1s2x4x3x7])\n",
            out,
        )
        self.assertEqual(len(_dims(results[5])), 5)


class TestModelInputsOnnxDiagnosticArguments(ExtTestCase):
    """method_name, level, name, auto=True and auto='<prefix>', **kwargs nesting"""

    def test_method_name_level_name(self):
        class Model(torch.nn.Module):
            def forward(self, x):
                return x

            def generate(self, input_ids, max_length=3):
                return input_ids

        sets = [(torch.ones(2, 3),), (torch.ones(3, 4),)]
        mi = ModelInputs(Model(), sets, level=1, method_name="generate", name="gen")
        self.assertEqual((mi.level, mi.name, mi.method_name), (1, "gen", "generate"))
        args, kwargs, ds = mi.move_to_kwargs(sets[0], {}, mi.guess_dynamic_shapes())
        self.assertEqual(list(kwargs), ["input_ids"])
        self.assertEqual(list(ds[1]), ["input_ids"])
        self.assertEqual(ModelInputs(Model(), sets).level, 0)

    def test_method_name_bad(self):
        sets = [(torch.ones(2),)]
        self.assertRaise(
            lambda: ModelInputs(torch.nn.Linear(2, 2), sets, method_name="missing"),
            AttributeError,
            "method_name='missing'",
        )
        self.assertRaise(lambda: ModelInputs(None, sets, level=-1), TypeError, "level")
        self.assertRaise(lambda: ModelInputs(None, sets, name=3), TypeError, "name must")
        self.assertRaise(lambda: ModelInputs(None, sets, method_name=""), TypeError, "method_name")

    def test_auto_true_gives_dim_auto(self):
        class Model(torch.nn.Module):
            def forward(self, x, y):
                return x + y

        sets = [(torch.ones(2, 3), torch.ones(2, 3)), (torch.ones(3, 3), torch.ones(3, 3))]
        args_ds, kwargs_ds = ModelInputs(Model(), sets).guess_dynamic_shapes(auto=True)
        self.assertEqual(args_ds, ({0: torch.export.Dim.AUTO}, {0: torch.export.Dim.AUTO}))
        ep = torch.export.export(Model(), sets[0], dynamic_shapes=args_ds)
        self.assertEqual(len(ep.graph_signature.user_inputs), 2)

    def test_auto_prefix(self):
        class Model(torch.nn.Module):
            def forward(self, x, y=None):
                return x

        sets = [
            dict(x=torch.ones(2, 3), y=torch.ones(5)),
            dict(x=torch.ones(3, 4), y=torch.ones(6)),
        ]
        _, kwargs_ds = ModelInputs(Model(), sets).guess_dynamic_shapes(auto="dd")
        self.assertEqual(kwargs_ds, dict(x={0: "dd_0", 1: "dd_1"}, y={0: "dd_2"}))
        self.assertRaise(
            lambda: ModelInputs(Model(), sets).guess_dynamic_shapes(auto=""), ValueError, "auto"
        )
        self.assertRaise(
            lambda: ModelInputs(Model(), sets).guess_dynamic_shapes(auto=1), ValueError, "auto"
        )

    def test_var_keyword_nested_after_move_to_kwargs(self):
        class Model(torch.nn.Module):
            def forward(self, x, **kwargs):
                return x + kwargs["extra"]

        sets = [
            ((torch.ones(2, 3),), dict(extra=torch.ones(2, 3))),
            ((torch.ones(4, 3),), dict(extra=torch.ones(4, 3))),
        ]
        mi = ModelInputs(Model(), sets)
        ds = mi.guess_dynamic_shapes()
        self.assertIn("kwargs", ds[1])
        args, kwargs, new_ds = mi.move_to_kwargs(*sets[0], ds)
        self.assertEqual(list(new_ds[1]), ["x", "kwargs"])
        self.assertEqual(list(new_ds[1]["kwargs"]), ["extra"])
        self.assertEqual(list(kwargs), ["x", "extra"])
        self.assertEqual(args, ())


if __name__ == "__main__":
    unittest.main(verbosity=2)


class TestModelInputsCacheNames(ExtTestCase):
    def test_input_sets_mixing_names_are_one_argument(self):
        class New(torch.nn.Module):
            def forward(self, input_ids, cache=None):
                return input_ids

        sets = [
            dict(input_ids=torch.ones(2, 3), past_key_values=_cache(1, 2, 1, 5, 4)),
            dict(input_ids=torch.ones(3, 4), cache=_cache(1, 3, 1, 7, 4)),
        ]
        mi = ModelInputs(New(), sets)
        self.assertEqual(mi.cache_name, "cache")
        self.assertEqual([list(kw) for _, kw in mi.inputs], [["input_ids", "cache"]] * 2)
        # the user's input sets are left as they were
        self.assertIn("past_key_values", sets[0])
        _, ds = mi.guess_dynamic_shapes()
        self.assertEqual(list(ds), ["input_ids", "cache"])
        self.assertEqual(len(ds["cache"]), 2)
        _, kwargs, (_, kwargs_ds) = mi.move_to_kwargs(
            (),
            {"past_key_values": sets[0]["past_key_values"]},
            ((), {"past_key_values": ds["cache"]}),
        )
        self.assertEqual(list(kwargs), ["cache"])
        self.assertEqual(list(kwargs_ds), ["cache"])

    def test_undeclared_cache_keeps_the_first_name(self):
        def forward(x, **kwargs):
            return x

        sets = [dict(x=torch.ones(2), cache=1), dict(x=torch.ones(3), past_key_values=2)]
        mi = ModelInputs(forward, sets)
        self.assertEqual(mi.cache_name, "cache")
        self.assertEqual(mi.inputs[1][1], {"x": sets[1]["x"], "cache": 2})

    def test_one_set_with_both_names_is_a_clear_error(self):
        def forward(x, cache=None):
            return x

        with self.assertRaises(ValueError) as cm:
            ModelInputs(forward, [dict(x=torch.ones(2), cache=1, past_key_values=2)])
        self.assertIn("inputs[0] gives the cache twice", str(cm.exception))

"""
The ``custom`` exporter of :func:`onnx_diagnostic.export.api.to_onnx`: the ATen graph of a
:class:`torch.export.ExportedProgram` translated straight into ONNX (:mod:`.translator`,
:mod:`.aten_ops`), then cleaned and fused by passes of our own (:mod:`.passes`,
:mod:`.fusions`).
"""

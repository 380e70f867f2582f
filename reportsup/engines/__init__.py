"""Inference engines behind ``reportsup-label --backend`` (issue 23): besides eager/compiled PyTorch, ONNX
Runtime with its transformer optimizer's fusions (fp32, or int8 by dynamic quantisation), and the
``--backend auto`` choice between them by the CPU's features and a cached calibration run.

* :mod:`reportsup.engines.cache`: where exports, calibrations and inductor's compiled kernels are kept
  between runs (``REPORTSUP_CACHE_DIR``, default ``~/.cache/reportsup``).
* :mod:`reportsup.engines.onnx_export`: a report classifier exported to ONNX once, optimised (fused
  attention, layer norm, GELU), optionally int8, cached by the checkpoint's SHA-256 and the export settings.
* :mod:`reportsup.engines.onnxruntime_backend`: an ONNX Runtime session called like the torch model.
* :mod:`reportsup.engines.auto`: the candidates a CPU offers, their calibration, the cached choice.
"""

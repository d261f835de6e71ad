"""PyTorch -> ONNX, family-agnostic: ExportSpec (spec), export (onnx), parity (validate),
input samplers (samplers). Which graphs exist is the registry's business
(talkrt.models.registry.get_spec); precision plans live in talkrt/precision/."""

"""VITS as a talkrt family: the text-to-speech graphs and the checkpoint signatures."""

from talkrt.models.family import Family, Graph

FAMILY = Family(
    name="vits",
    summary="VITS text to speech: encoder | length regulation | decoder",
    graphs={
        "vits": Graph(
            "talkrt.models.vits.specs:vits_spec",
            "VITS text to speech as three graphs: encoder | length regulation (runtime) | decoder, plus one graph for ONNX Runtime.",
            weights="directory",
            presets="mms-tts-eng, ljs-base, ljs-nosdp, vctk-base or tiny (random weights).",
            exporter="talkrt.models.vits.specs:export_vits",
            builder="talkrt.models.vits.synth:build_vits_engines",
        ),
    },
    signatures={
        "vits (original)": frozenset({"enc_p", "dec", "flow", "dp", "enc_q"}),
        "vits (transformers)": frozenset({"text_encoder", "decoder", "flow", "duration_predictor", "posterior_encoder"}),
    },
    voice="talkrt.models.vits.voice",
)
